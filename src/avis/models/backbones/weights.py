"""Strict loading of ImageNet backbone weights into ``ResNet`` / ``SwinTransformer``.

Supported files:
- torchvision ResNet ``.pth`` (``conv1``, ``bn1``, ``layer{1..4}.{i}.{conv,bn}{j}``,
  ``downsample.{0,1}``; ``fc.*`` ignored);
- detectron2 ``.pkl``: ``R-50.pkl`` in MSRA/Caffe2 names (``conv1_w``, ``res_conv1_bn_s``,
  ``res2_0_branch2a_w``, ...) or converted from torchvision (``stem.conv1.weight``, ...,
  ``__author__`` set), and Mask2Former's converted Swin ``.pkl``; read with a restricted
  unpickler (``weights_pickle.py``);
- official Swin ``.pth`` (``{"model": state_dict}``; ``head.*``, the final ``norm.*`` and
  ``attn_mask`` buffers ignored, ``relative_position_index`` regenerated, the per-stage
  output norms ``norm{0..3}`` (absent from ImageNet weights) kept at their init).

Every loader checks names and shapes and raises ``CheckpointError`` listing the missing,
unexpected and mis-shaped entries; nothing is loaded unless everything fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avis.errors import CheckpointError
from avis.models.backbones.resnet import ResNet
from avis.models.backbones.swin import SwinTransformer
from avis.models.backbones.weights_pickle import read_weights_pickle

MAX_LISTED = 20  # names listed per category in an error message
CAFFE2_NOTE = (
    "Caffe2/MSRA weights were trained with the stride in the 1x1 conv (ResNet(stride_in_1x1="
    "True)), BGR input and pixel std 1; avis's default input normalisation differs"
)


@dataclass
class ConvertedWeights:
    """A file's tensors renamed to avis names, with what was dropped on the way."""

    state: dict[str, torch.Tensor]
    origin: dict[str, str]  # avis name -> name in the file
    ignored: list[str] = field(default_factory=list)  # file names deliberately unused
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadReport:
    source: Path
    loaded: tuple[str, ...]  # avis names filled from the file
    kept_init: tuple[str, ...]  # avis names the file does not provide (allowed ones only)
    ignored: tuple[str, ...]  # file names not used (classifier heads, derived buffers)
    notes: tuple[str, ...] = ()


def _as_tensor(value: Any, source: Path, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return torch.from_numpy(np.ascontiguousarray(value))
    raise CheckpointError(
        f"{source}: entry {name!r} should be a numeric array, found "
        f"{type(value).__name__} {getattr(value, 'dtype', '')}".rstrip()
    )


def _convert(
    state: Mapping[str, Any], source: Path, rename: Callable[[str], str | None]
) -> ConvertedWeights:
    """Apply ``rename`` (None = ignore) to every file name; refuse name collisions."""
    converted = ConvertedWeights(state={}, origin={})
    for name, value in state.items():
        new_name = rename(name)
        if new_name is None:
            converted.ignored.append(name)
            continue
        if new_name in converted.state:
            raise CheckpointError(
                f"{source}: entries {converted.origin[new_name]!r} and {name!r} both map to "
                f"{new_name!r}"
            )
        converted.state[new_name] = _as_tensor(value, source, name)
        converted.origin[new_name] = name
    return converted


def torchvision_resnet_name(name: str) -> str | None:
    """``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``; ``fc.*`` -> None."""
    if name.startswith("fc."):
        return None
    name = re.sub(r"^layer(\d)", lambda match: f"res{int(match[1]) + 1}", name)
    if not name.startswith("res"):
        name = "stem." + name
    name = re.sub(r"\bbn(\d)\b", r"conv\1.norm", name)
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


# detectron2's Caffe2 -> detectron2 renaming rules for backbone names, applied in order
_CAFFE2_RULES: tuple[tuple[str, str], ...] = (
    (r"\.b$", ".bias"),
    (r"\.w$", ".weight"),
    (r"(bn|gn)\.s$", "norm.weight"),
    (r"(bn|gn)\.bias$", "norm.bias"),
    (r"bn\.rm$", "norm.running_mean"),
    (r"bn\.running\.mean$", "norm.running_mean"),
    (r"bn\.riv$", "norm.running_var"),
    (r"bn\.running\.var$", "norm.running_var"),
    (r"bn\.gamma$", "norm.weight"),
    (r"bn\.beta$", "norm.bias"),
    (r"^res\.conv1\.norm\.", "conv1.norm."),
    (r"^conv1\.", "stem.conv1."),
    (r"\.branch1\.", ".shortcut."),
    (r"\.branch2a\.", ".conv1."),
    (r"\.branch2b\.", ".conv2."),
    (r"\.branch2c\.", ".conv3."),
)


def caffe2_resnet_name(name: str) -> str | None:
    """``res2_0_branch2a_bn_s`` -> ``res2.0.conv1.norm.weight``; classifier/momenta -> None."""
    if name.startswith(("fc1000_", "pred_")) or name.endswith("_momentum"):
        return None
    name = name.replace("_", ".")
    for pattern, replacement in _CAFFE2_RULES:
        name = re.sub(pattern, replacement, name)
    return name


def detectron2_resnet_name(name: str) -> str | None:
    """Names of torchvision weights converted by detectron2 (``stem.fc.*`` dropped)."""
    return None if name.startswith(("stem.fc.", "fc.")) else name


def swin_name(name: str) -> str | None:
    """Official Swin names are avis names; classifier, final norm, derived buffers -> None."""
    if name.startswith(("head.", "norm.")) or name.endswith(
        ("attn_mask", "relative_position_index")
    ):
        return None
    return name


def _optional_key(model: nn.Module, name: str) -> bool:
    """Model entries a pretraining file may lack (they keep their initial values)."""
    if name.endswith("num_batches_tracked"):
        return True
    if isinstance(model, SwinTransformer):
        return bool(re.fullmatch(r"norm\d\.(weight|bias)", name)) or name.endswith(
            "relative_position_index"
        )
    return False


def _listing(title: str, names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f"\n  {title} ({len(names)}): {shown}{more}"


def load_converted(model: nn.Module, converted: ConvertedWeights, source: Path) -> LoadReport:
    """Strictly load renamed weights: every model entry given (or optional), none extra."""
    expected = model.state_dict()
    state = dict(converted.state)
    ignored = list(converted.ignored)
    for name in [n for n in state if n.endswith("num_batches_tracked") and n not in expected]:
        ignored.append(converted.origin[name])  # BN counters have no place in frozen norms
        del state[name]

    def described(name: str) -> str:
        original = converted.origin.get(name, name)
        return name if original == name else f"{name} (file: {original})"

    missing = [n for n in expected if n not in state and not _optional_key(model, n)]
    unexpected = [described(n) for n in state if n not in expected]
    mismatched = [
        f"{described(n)} file {tuple(state[n].shape)} vs model {tuple(expected[n].shape)}"
        for n in state
        if n in expected and state[n].shape != expected[n].shape
    ]
    if missing or unexpected or mismatched:
        message = f"{source}: weights do not fit {type(model).__name__}"
        if missing:
            message += _listing("missing from the file", missing)
        if unexpected:
            message += _listing("unexpected in the file", unexpected)
        if mismatched:
            message += _listing("shape mismatch", mismatched)
        raise CheckpointError(message)
    kept = [n for n in expected if n not in state]
    model.load_state_dict({**{n: expected[n] for n in kept}, **state}, strict=True)
    return LoadReport(
        source=source, loaded=tuple(state), kept_init=tuple(kept), ignored=tuple(ignored),
        notes=tuple(converted.notes),
    )


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot load with torch.load(weights_only=True): {error}") from error


def _state_dict_of(obj: Any, source: Path) -> Mapping[str, Any]:
    """The flat name -> tensor mapping of a file: the object itself or its ``"model"``."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(
            f"{source}: expected a state dict (name -> tensor) or {{'model': state dict}}, "
            f"found {type(obj).__name__}"
        )
    return obj


def load_torchvision_resnet(model: ResNet, path: Path | str) -> LoadReport:
    """Load a torchvision ``resnet{18,34,50}`` state dict (``.pth``) into ``model``."""
    path = Path(path)
    state = _state_dict_of(_torch_load(path), path)
    return load_converted(model, _convert(state, path, torchvision_resnet_name), path)


def load_swin(model: SwinTransformer, path: Path | str) -> LoadReport:
    """Load an official Swin classification checkpoint (``{"model": ...}``) into ``model``."""
    path = Path(path)
    state = _state_dict_of(_torch_load(path), path)
    return load_converted(model, _convert(state, path, swin_name), path)


def load_detectron2_pkl(model: nn.Module, path: Path | str) -> LoadReport:
    """Load a detectron2 ``.pkl`` (read with the restricted unpickler) into ``model``.

    ResNet: Caffe2/MSRA names (a flat dict, or ``{"blobs": ...}``; BN scale/bias only, so
    running statistics are set to mean 0 / var 1 like detectron2 does) or detectron2 names
    (``{"model": ..., "__author__": ...}``). Swin: Mask2Former's converted ``.pkl``.
    """
    path = Path(path)
    data = read_weights_pickle(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict in the pickle, found {type(data).__name__}")
    detectron2_format = "model" in data and "__author__" in data
    if not detectron2_format and isinstance(data.get("blobs"), Mapping):
        data = data["blobs"]  # Caffe2 detection models keep their tensors under "blobs"
    state = _state_dict_of(data, path)
    if isinstance(model, SwinTransformer):
        return load_converted(model, _convert(state, path, swin_name), path)
    if not isinstance(model, ResNet):
        raise CheckpointError(f"{path}: no .pkl mapping for {type(model).__name__}")
    if detectron2_format:
        return load_converted(model, _convert(state, path, detectron2_resnet_name), path)
    converted = _convert(state, path, caffe2_resnet_name)
    _fill_identity_statistics(model, converted)
    converted.notes.append(CAFFE2_NOTE)
    return load_converted(model, converted, path)


def _fill_identity_statistics(model: nn.Module, converted: ConvertedWeights) -> None:
    """Caffe2 BN is an affine channel op: give norms without statistics mean 0, var 1."""
    expected = model.state_dict()
    for name in list(converted.state):
        if not name.endswith(".norm.weight"):
            continue
        prefix = name[: -len("weight")]
        for buffer, fill in (("running_mean", 0.0), ("running_var", 1.0)):
            key = prefix + buffer
            if key in expected and key not in converted.state:
                converted.state[key] = torch.full_like(expected[key], fill)
                converted.origin[key] = f"<{buffer} = {fill:g}, Caffe2 has none>"


def load_backbone_weights(model: nn.Module, path: Path | str) -> LoadReport:
    """Pick the loader from the file suffix (``.pkl``) and the backbone type."""
    path = Path(path)
    if path.suffix == ".pkl":
        return load_detectron2_pkl(model, path)
    if isinstance(model, ResNet):
        return load_torchvision_resnet(model, path)
    if isinstance(model, SwinTransformer):
        return load_swin(model, path)
    raise CheckpointError(f"{path}: no weight loader for {type(model).__name__}")
