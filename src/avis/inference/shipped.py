"""Checkpoints for prediction: what a model needs besides weights, and the bundled assets.

avis checkpoints (`avis.models.checkpoint.save_model`) may carry two metadata fields that
prediction uses:
  "class_names":    list of K names (index = class index 0..K-1)
  "audio_features": name of the audio feature extractor the model was trained with
                    ("weight_free" or "vggish")
Official AVISM checkpoints carry neither: they are the 26 AVISeg classes and VGGish features.

The package ships, under `avis/assets/`, a small synthetic demo video with its annotation and
(once trained) the tiny synthetic-benchmark checkpoint `avism_tiny_synth.pth`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from avis.categories import AVISEG_CLASSES
from avis.errors import CheckpointError, DataError
from avis.io.atomic import save_torch_atomic

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = "avism_tiny_synth.pth"
DEMO_VIDEO = "demo.mp4"
DEMO_ANNOTATIONS = "demo.json"  # AVISeg-format ground truth of the demo video (video id 1)
VGGISH = "vggish"
WEIGHT_FREE = "weight_free"
CLASS_NAMES_KEY = "class_names"
AUDIO_FEATURES_KEY = "audio_features"
TRAINING_ONLY_KEYS = ("optimizer", "scheduler", "scaler", "rng", "train_config", "world_size")


def asset_path(name: str) -> Path:
    """Path of a bundled asset (it may not exist: check before use)."""
    return Path(str(resources.files("avis").joinpath("assets").joinpath(name)))


@dataclass(frozen=True)
class ModelInfo:
    """What prediction needs to know about a loaded checkpoint."""

    source: str  # the file
    format: str  # "avis" or "official"
    class_names: list[str]
    audio_features: str | None  # extractor the model was trained with; None = unknown


def shipped_checkpoint() -> Path:
    """The bundled tiny checkpoint, or a CheckpointError saying it is not there."""
    path = asset_path(SHIPPED_CHECKPOINT)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the shipped tiny checkpoint is missing from this installation; "
            "give --weights (an avis or official AVISM checkpoint)"
        )
    return path


def model_info(obj: dict, source: str, num_classes: int) -> ModelInfo:
    """Class names and audio-feature kind from a loaded checkpoint dict (see module doc)."""
    from avis.models.checkpoint import is_avis_checkpoint

    if not is_avis_checkpoint(obj):
        names = list(AVISEG_CLASSES) if num_classes == len(AVISEG_CLASSES) else _generic(num_classes)
        return ModelInfo(source, "official", names, VGGISH)
    stored = obj.get(CLASS_NAMES_KEY)
    if stored is None:
        log.warning("%s: no '%s' in the checkpoint; classes are shown as class_0..", source, CLASS_NAMES_KEY)
        names = _generic(num_classes)
    elif (
        not isinstance(stored, (list, tuple))
        or len(stored) != num_classes
        or not all(isinstance(n, str) for n in stored)
    ):
        found = len(stored) if isinstance(stored, (list, tuple)) else type(stored).__name__
        raise CheckpointError(
            f"{source}: field '{CLASS_NAMES_KEY}' must list {num_classes} names (the model's "
            f"classes), found {found}"
        )
    else:
        names = [checked_class_name(n, source) for n in stored]
    features = obj.get(AUDIO_FEATURES_KEY)
    if features is not None and not isinstance(features, str):
        raise CheckpointError(f"{source}: field '{AUDIO_FEATURES_KEY}' must be a string, found {features!r}")
    return ModelInfo(source, "avis", list(names), features)


def checked_class_name(name: str, source: str) -> str:
    """A class name stored in a checkpoint, refused (CheckpointError) when it holds a control
    character: names reach the terminal and the overlay / timeline, where an escape sequence
    would act (the same rule as for category names of JSON files)."""
    from avis.data.paths import check_class_name

    try:
        return check_class_name(name, f"{source}: field '{CLASS_NAMES_KEY}'")
    except DataError as err:
        raise CheckpointError(str(err)) from None


def _generic(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def ship_checkpoint(
    src: str | Path,
    dst: str | Path,
    class_names: list[str] | None = None,
    audio_features: str = WEIGHT_FREE,
    half: bool = True,
    inference: dict | None = None,
) -> Path:
    """Turn an avis (training) checkpoint into a prediction checkpoint: weights + config +
    class names (default: the checkpoint's own) + audio-feature kind, without optimiser
    state; float16 storage when `half` (loaded back into float32 parameters). `inference`:
    new values of inference settings of the config (`INFERENCE_FIELDS`, e.g. the score
    threshold); the weights' meaning cannot be changed this way."""
    from avis.models.checkpoint import is_avis_checkpoint, read_checkpoint
    from avis.models.config import INFERENCE_FIELDS, AVISMConfig

    obj = read_checkpoint(src)
    if not is_avis_checkpoint(obj):
        raise CheckpointError(f"{src}: not an avis checkpoint (field 'format' = 'avis' expected)")
    num_classes = int(obj["config"]["num_classes"])
    if class_names is None:
        class_names = obj.get(CLASS_NAMES_KEY)
        if class_names is None:
            raise CheckpointError(f"{src}: no '{CLASS_NAMES_KEY}' in the checkpoint; give the class names")
    if len(class_names) != num_classes:
        raise CheckpointError(f"{src}: model has {num_classes} classes, {len(class_names)} names given")
    out = {k: v for k, v in obj.items() if k not in TRAINING_ONLY_KEYS}
    if inference:
        wrong = sorted(set(inference) - set(INFERENCE_FIELDS))
        if wrong:
            raise CheckpointError(f"not inference settings: {wrong} (allowed: {list(INFERENCE_FIELDS)})")
        try:
            config = AVISMConfig.from_dict({**obj["config"], **inference}, str(src))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{src}: bad inference settings {inference}: {err}") from err
        out["config"] = config.to_dict()
    if half:
        out["model"] = {
            k: v.half() if v.is_floating_point() else v for k, v in obj["model"].items()
        }
    out[CLASS_NAMES_KEY] = list(class_names)
    out[AUDIO_FEATURES_KEY] = audio_features
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(out, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    """`python -m avis.inference.shipped TRAINED.pth --classes-from ROOT/train.json`:
    write the shipped prediction checkpoint (default: into this installation's assets)."""
    import argparse
    import json

    from avis.engine.config import parse_override

    parser = argparse.ArgumentParser(prog="python -m avis.inference.shipped", description=main.__doc__)
    parser.add_argument("checkpoint", type=Path, help="trained avis checkpoint")
    parser.add_argument(
        "--classes-from", type=Path,
        help="an annotation JSON whose categories (sorted by id) name the model's classes "
        "(default: the class names stored in the checkpoint)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help=f"default: assets/{SHIPPED_CHECKPOINT}")
    parser.add_argument("--audio-features", default=WEIGHT_FREE, choices=(WEIGHT_FREE, VGGISH))
    parser.add_argument("--float32", action="store_true", help="keep float32 weights")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an inference setting of the stored config, e.g. split_components=true (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    inference = {}
    for item in args.set:  # the `avis train` override syntax; nested keys are not settings
        try:
            inference.update(parse_override(item))
        except DataError as err:
            parser.error(f"--set: {err}")
    names = None
    if args.classes_from is not None:
        categories = json.loads(args.classes_from.read_text())["categories"]
        names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    out = args.out or asset_path(SHIPPED_CHECKPOINT)
    path = ship_checkpoint(
        args.checkpoint, out, names, args.audio_features, half=not args.float32, inference=inference
    )
    names = torch.load(path, weights_only=True)[CLASS_NAMES_KEY]
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {len(names)} classes {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
