"""Checkpoints: official AVISM (detectron2) files <-> avis, strict loading, avis's own format.

Official files are ``{"model": state_dict, ...}`` with prefixes ``backbone.``,
``sem_seg_head.pixel_decoder.``, ``sem_seg_head.predictor.`` and ``avism_module.`` (or
``vita_module.`` with ``vita_mask_features`` in the COCO variants) plus two loss constants
(``criterion.empty_weight``, ``avism_criterion.empty_weight``) that carry no weights.
avis names the same parts ``backbone.``, ``pixel_decoder.``, ``frame_decoder.`` and
``video_module.``; below those prefixes the names are the official ones.

avis's own file: ``{"format": "avis", "version": 1, "config": AVISMConfig.to_dict(),
"model": state_dict, ...extra}``; ``load_model(path)`` rebuilds the model in one call.
Every file is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avis.errors import CheckpointError
from avis.io.atomic import save_torch_atomic
from avis.models.avism import AVISM, build_avism
from avis.models.config import PRESETS, AVISMConfig

AVIS_FORMAT = "avis"
AVIS_FORMAT_VERSION = 1
NO_OBJECT_WEIGHT = 0.1  # official MODEL.MASK_FORMER.NO_OBJECT_WEIGHT, stored in empty_weight
MAX_LISTED = 12  # keys listed per kind of problem in an error message

# official prefix -> avis prefix (the first match wins)
_OFFICIAL_TO_AVIS = (
    ("backbone.", "backbone."),
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "frame_decoder."),
    ("avism_module.", "video_module."),
    ("vita_module.", "video_module."),
)
_VIDEO_MASK_CONV = {"vita": "vita_mask_features", "avism": "avism_mask_features"}
# loss constants stored in official state dicts; ignored when reading
_CRITERION_PREFIXES = ("criterion.", "avism_criterion.", "vita_criterion.")
_EMPTY_WEIGHT = "empty_weight"


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = len(keys) - MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def official_to_avis(
    state_dict: Mapping[str, Tensor], source: str = "state dict"
) -> dict[str, Tensor]:
    """Rename an official (detectron2) state dict to avis names; drop the loss constants.

    Raises CheckpointError for keys that belong to no known part.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(_CRITERION_PREFIXES) and key.endswith(_EMPTY_WEIGHT):
            continue
        for old, new in _OFFICIAL_TO_AVIS:
            if key.startswith(old):
                rest = key[len(old) :]
                if old == "vita_module.":
                    rest = rest.replace(_VIDEO_MASK_CONV["vita"], _VIDEO_MASK_CONV["avism"], 1)
                out[new + rest] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} keys belong to no part of AVISM "
            f"(expected prefixes {[p for p, _ in _OFFICIAL_TO_AVIS]}): {_listing(unknown)}"
        )
    return out


def avis_to_official(
    state_dict: Mapping[str, Tensor],
    naming: str = "avism",
    num_classes: int | None = None,
    no_object_weight: float = NO_OBJECT_WEIGHT,
) -> dict[str, Tensor]:
    """Rename an avis state dict to the official layout.

    naming: ``"avism"`` (``avism_module.``, as the IN checkpoints) or ``"vita"``
    (``vita_module.`` / ``vita_mask_features``, as the COCO checkpoints). When
    ``num_classes`` is given, the loss constants ``criterion.empty_weight`` and
    ``<naming>_criterion.empty_weight`` (K ones then ``no_object_weight``) are added, so the
    result has exactly the keys of an official checkpoint.
    """
    if naming not in _VIDEO_MASK_CONV:
        raise ValueError(f"naming must be one of {sorted(_VIDEO_MASK_CONV)}, got {naming!r}")
    video_prefix = f"{naming}_module."
    avis_to_off = {
        "backbone.": "backbone.",
        "pixel_decoder.": "sem_seg_head.pixel_decoder.",
        "frame_decoder.": "sem_seg_head.predictor.",
        "video_module.": video_prefix,
    }
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for new, old in avis_to_off.items():
            if key.startswith(new):
                rest = key[len(new) :]
                if new == "video_module.":
                    rest = rest.replace(_VIDEO_MASK_CONV["avism"], _VIDEO_MASK_CONV[naming], 1)
                out[old + rest] = value
                break
        else:
            raise CheckpointError(f"avis state dict: key {key!r} belongs to no part of AVISM")
    if num_classes is not None:
        empty = torch.ones(num_classes + 1)
        empty[-1] = no_object_weight
        out[f"criterion.{_EMPTY_WEIGHT}"] = empty.clone()
        out[f"{naming}_criterion.{_EMPTY_WEIGHT}"] = empty.clone()
    return out


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "state dict"
) -> None:
    """Raise CheckpointError unless ``state_dict`` has exactly the model's keys and shapes."""
    odd = [
        f"{k} ({type(v).__name__}{'' if not isinstance(v, Tensor) else ', ' + str(v.layout)})"
        for k, v in state_dict.items()
        if not isinstance(v, Tensor) or v.layout != torch.strided
    ]
    if odd:  # a list, a number or a sparse tensor where a dense tensor belongs
        raise CheckpointError(f"{source}: {len(odd)} entries are not dense tensors: {_listing(odd)}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"wrong shape {len(mismatched)}: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source}: weights do not fit the model ({len(expected)} keys expected, "
            f"{len(state_dict)} found):\n  " + "\n  ".join(problems)
        )
    check_finite(state_dict, source)


def check_finite(state_dict: Mapping[str, Tensor], source: str = "state dict") -> None:
    """Raise CheckpointError naming the tensors that hold NaN or infinity: such weights give
    NaN scores, i.e. no instances and no error, a silently wrong result."""
    bad = []
    for key, value in state_dict.items():
        if value.is_floating_point() and value.device.type != "meta":
            count = int(value.numel() - torch.isfinite(value).sum())
            if count:
                bad.append(f"{key} ({count} of {value.numel()} values)")
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values: {_listing(bad)}"
        )


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "state dict"
) -> None:
    """Strict load: every key used, none missing, shapes checked (CheckpointError otherwise)."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load a checkpoint file (weights_only=True) and check it is a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def is_avis_checkpoint(obj: Mapping[str, Any]) -> bool:
    return obj.get("format") == AVIS_FORMAT


def state_dict_of(obj: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """The avis-named state dict of a loaded checkpoint (avis or official format)."""
    if is_avis_checkpoint(obj):
        version = obj.get("version")
        if version != AVIS_FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: avis checkpoint version {version!r}, this avis reads {AVIS_FORMAT_VERSION}"
            )
        model = obj.get("model")
        if not isinstance(model, dict):
            raise CheckpointError(f"{source}: field 'model' must be a state dict")
        return model
    model = obj.get("model", None)
    if not isinstance(model, dict):
        raise CheckpointError(
            f"{source}: neither an avis checkpoint (field 'format' = 'avis') nor an official "
            "detectron2 checkpoint (field 'model' = state dict); found fields "
            f"{sorted(map(str, obj))[:MAX_LISTED]}"
        )
    return official_to_avis(model, source)


def save_model(path: str | Path, model: nn.Module, cfg: AVISMConfig, **extra: Any) -> None:
    """Write avis's own checkpoint (config + weights + optional plain extra fields)."""
    reserved = {"format", "version", "config", "model"} & set(extra)
    if reserved:
        raise ValueError(f"extra fields may not be named {sorted(reserved)}")
    payload = {
        "format": AVIS_FORMAT,
        "version": AVIS_FORMAT_VERSION,
        "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    save_torch_atomic(payload, path)


def config_of(obj: Mapping[str, Any], source: str) -> AVISMConfig:
    """The config stored in an avis checkpoint, checked by building its model on the meta
    device (no memory): a value of the wrong type or range is a CheckpointError here."""
    data = obj.get("config")
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: avis checkpoint without a 'config' dict")
    try:
        cfg = AVISMConfig.from_dict(data, source)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: bad 'config' field: {err}") from err
    check_config_values(cfg, source)
    meta_model(cfg, source)
    return cfg


# inference settings that the meta build does not use: they must be at least 1
_POSITIVE_FIELDS = ("test_run_chunk_size", "test_interpolate_chunk_size", "top_k", "test_short_side", "test_max_size")
_FRACTION_FIELDS = ("dropout", "split_min_blob_fraction", "split_min_frame_share", "score_threshold", "mask_prob_threshold")


def check_config_values(cfg: AVISMConfig, source: str) -> None:
    """Every scalar field of a config read from a file has the type of its default (a bool, a
    non-negative integer, a finite number) and the sizes and fractions their range; else a
    CheckpointError naming the field (a NaN `size_divisibility` or a negative `top_k` failed
    deep inside inference)."""
    default = AVISMConfig()
    for field in fields(AVISMConfig):
        name, value, like = field.name, getattr(cfg, field.name), getattr(default, field.name)
        if isinstance(like, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(like, int):
            low = 1 if name in _POSITIVE_FIELDS else 0
            ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= low, f"an integer >= {low}"
        elif isinstance(like, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            want = "a finite number"
            if name in _FRACTION_FIELDS:
                ok, want = ok and 0.0 <= value <= 1.0, "in [0, 1]"
        elif isinstance(like, str):
            ok, want = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise CheckpointError(f"{source}: config field {name} must be {want}, found {value!r}")


def meta_model(cfg: AVISMConfig, source: str) -> AVISM:
    """The model of `cfg` on the meta device (keys and shapes, no weights). A config read from
    a file that cannot be built (a string for a size, a negative size, an unknown backbone)
    is a CheckpointError, not whatever torch raises deep inside a layer."""
    try:
        with torch.device("meta"):
            return build_avism(cfg)
    except Exception as err:  # noqa: BLE001 - any failure means the stored config is unusable
        raise CheckpointError(
            f"{source}: the model config cannot be built ({type(err).__name__}: {err})"
        ) from None


def build_loaded(cfg: AVISMConfig, state_dict: Mapping[str, Tensor], source: str) -> AVISM:
    """The model of `cfg` with `state_dict` loaded strictly. Keys and shapes are checked on
    the meta device first, so a config whose sizes are far larger than its weights (a hostile
    or damaged file) is refused before any memory is allocated for it."""
    check_state_dict(meta_model(cfg, source), state_dict, source)
    model = build_avism(cfg)
    load_state_dict_strict(model, state_dict, source)
    return model


def resolve_config(preset: str | AVISMConfig | None, source: str) -> AVISMConfig:
    if isinstance(preset, AVISMConfig):
        return preset
    if preset is None:
        raise CheckpointError(
            f"{source}: an official checkpoint does not say which model it is; give a preset "
            f"({', '.join(sorted(PRESETS))})"
        )
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]()


def load_model(
    path: str | Path, preset: str | AVISMConfig | None = None
) -> tuple[AVISM, AVISMConfig]:
    """Build and strictly load a model from an avis checkpoint (its own config) or an official
    one (config from ``preset``: a name of ``PRESETS`` or an AVISMConfig). Eval mode, CPU."""
    source = str(path)
    obj = read_checkpoint(path)
    if is_avis_checkpoint(obj):
        cfg = preset if isinstance(preset, AVISMConfig) else config_of(obj, source)
    else:
        cfg = resolve_config(preset, source)
    state_dict = state_dict_of(obj, source)
    model = build_loaded(cfg, state_dict, source)
    return model.eval(), cfg
