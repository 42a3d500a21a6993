"""Training configuration: a preset, then a YAML file, then `key=value` overrides.

`TrainConfig` is plain data (nested dataclasses, JSON/YAML friendly). The resolved config is
written to the run folder (`config.yaml`) and into every checkpoint. Model fields are the
`AVISMConfig` fields of `avis.models.config`, given as overrides of `model_preset`
(`model.frame_queries=20`). `TRAIN_PRESETS` is a plain dict of functions, one per model
preset: `avism_r50` / `avism_swinl` follow the official recipe (48k iterations, 2 clips of
5 frames, AdamW 1e-4), `avism_tiny` is the CPU recipe for the synthetic benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from avis.errors import DataError
from avis.precision import PRECISIONS

EMBED_SCOPES = ("frame", "clip")  # loss.embed_scope: avis.losses.embedding.EMBED_SCOPES

AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class DataConfig:
    root: str = ""  # AVISeg-layout folder with train/ val/ test/ and {split}.json
    train_split: str = "train"
    eval_split: str = "val"  # periodic evaluation
    clip_frames: int = 5  # T frames per training clip
    frame_range: int = 20  # other frames within +-frame_range of the reference frame
    short_sides: list[int] = field(default_factory=lambda: list(range(288, 513, 32)))
    max_size: int = 768
    crop_prob: float = 0.5
    flip_prob: float = 0.5
    # the chance that a training clip's flips are drawn per frame (each frame mirrored at even
    # odds), so places may mirror between its frames while looks and sounds stay (0 = off)
    frame_flip_prob: float = 0.0
    num_workers: int = 0  # DataLoader worker processes per rank
    audio_policy: str = "pad"  # see avis.data.load_split
    audio_features: str = ""  # extractor name stored in the model ("" = FEATAudios/extractor.json)
    eval_max_videos: int = 0  # 0 = every video of the eval split
    # repeat-factor sampling: a video in which some class has >= 2 instances is shown this
    # many times as often as the others (1 = every video once per pass; fractions such as 1.5
    # are p / q showings against q, avis.engine.build.video_repeats)
    multi_instance_repeat: float = 1.0
    # the same factor for the final stage (`final_from`) alone; 0 = `multi_instance_repeat`
    final_multi_instance_repeat: float = 0.0
    # twin paste (avis.data.paste): the chance that a training clip gets a pasted copy of one of
    # its sounding instances as a new same-class track (0 = off)
    twin_paste_prob: float = 0.0
    # partial occlusion (avis.data.occlude): the chance that a training clip gets part of one
    # instance painted over with background in some of its frames (0 = off)
    occlude_prob: float = 0.0
    # a final training stage at other input sides (the test side, say: FixRes, Touvron et al.
    # 2019): from optimiser step `final_from` on (0 = no final stage) clips are resized to
    # `final_short_sides` (long side at most `final_max_size`, 0 = `max_size`); the time
    # budget can move the stage earlier (Trainer.check_time_budget)
    final_short_sides: list[int] = field(default_factory=list)
    final_max_size: int = 0
    final_from: int = 0
    # frames per clip in the final stage (0 = clip_frames): a track's identity trained over a
    # longer span at the end (the clips' times are then drawn anew)
    final_clip_frames: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05  # 0 for norms, embeddings and position tables
    backbone_lr_mult: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float = 0.01  # full-model gradient norm (0 = off)
    warmup_iters: int = 10
    warmup_factor: float = 1.0  # lr multiplier at iteration 0, linear to 1 at warmup_iters
    decay_steps: list[int] = field(default_factory=lambda: [32000])
    decay_gamma: float = 0.1


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    sim_weight: float = 0.5
    no_object_weight: float = 0.1
    # avis option: the frame level's no-object weight (None = no_object_weight, as officially)
    frame_no_object_weight: float | None = None
    num_points: int | None = 12544  # None = every cell of the prediction grid
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    official_quirks: bool = False
    anchor_cost: float = 0.0  # avis option: query-anchor term of the matching cost (both levels)
    quality_weight: float = 1.0  # models with `mask_quality`: BCE of the predicted mask IoU
    twin_weight: float = 0.0  # avis option: extra BCE weight on pixels of same-class other targets
    embed_weight: float = 1.0  # models with `instance_embed_dim`: discriminative embedding loss
    # ... with one mean per instance in each frame ("frame") or over the whole clip ("clip")
    embed_scope: str = "frame"
    # models with `mask_pilots` (training-only pilot queries, avis.losses.pilots): factor on
    # their CE / BCE / dice terms, the chance a pilot starts from a wrong class, and how far
    # its mask is moved (fraction of the instance's box size per axis)
    pilot_weight: float = 1.0
    pilot_label_noise: float = 0.2
    pilot_shift: float = 0.2
    # avis option (models with per_frame_mask_embed): factor on the BCE / dice of each track's
    # mask embedding of one frame read on the clip's next frame (avis.losses.criterion)
    cross_frame_weight: float = 0.0


@dataclass
class TrainConfig:
    model_preset: str = "avism_r50"
    model: dict[str, Any] = field(default_factory=dict)  # AVISMConfig overrides
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    iterations: int = 48000  # optimiser steps
    batch_size: int = 2  # clips per optimiser step, over all processes and accumulation steps
    accumulation: int = 1  # micro-batches per optimiser step
    seed: int = 0
    amp: str = "none"  # "bf16" (CPU or GPU) or "fp16" (GPU, with a gradient scaler)
    # avis.precision mode of training and its evaluation: fp32 (strict), tf32, bf16, fp16;
    # "auto" = `amp` when set, else the device's default (fp32 on CPU, bf16 on CUDA)
    precision: str = "auto"
    threads: int = 0  # torch.set_num_threads per process (0 = leave as is)
    processes: int = 1  # >1: `avis train` starts that many local DDP processes (torchrun)
    # how long a collective waits for the other processes before the run stops with an error
    # (a process or node that vanished without closing its connections); must exceed the
    # longest evaluation, during which the other processes wait for rank 0
    dist_timeout_minutes: float = 30.0
    # wall-clock budget of the training loop in minutes (0 = none): the run stops when it is
    # spent, and each LR decay step happens at its iteration or at the same fraction of the
    # budget, whichever comes first (see Trainer.check_time_budget)
    max_minutes: float = 0.0
    log_every: int = 20
    checkpoint_every: int = 1000
    keep_last: int = 3  # checkpoints kept in the run folder (the final one is always kept)
    eval_every: int = 0  # 0 = only after the last iteration; <0 = never
    tensorboard: bool = False
    init_weights: str = ""  # an avis checkpoint to start from (model weights only)
    # exponential moving average of the weights (avis.engine.ema), from optimiser step
    # `ema_from` on with this decay (0 = off); the average is what the run's evaluation scores
    # and `model_final.pth` holds; the time budget moves `ema_from` earlier as it moves the
    # final stage
    ema_decay: float = 0.0
    ema_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        check_ranges(self)
        if self.amp not in AMP_MODES:
            raise DataError(f"config: amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.precision not in ("auto", *PRECISIONS):
            raise DataError(f"config: precision must be auto or one of {PRECISIONS}, got {self.precision!r}")
        repeat_ratio(self.data.multi_instance_repeat, "data.multi_instance_repeat")
        if self.data.final_multi_instance_repeat:
            repeat_ratio(self.data.final_multi_instance_repeat, "data.final_multi_instance_repeat")
            if self.data.final_from <= 0:
                raise DataError("config: data.final_multi_instance_repeat needs a final stage (data.final_from > 0)")
        if self.data.final_from > 0 and not self.data.final_short_sides:
            raise DataError("config: data.final_from needs data.final_short_sides (the final stage's sides)")
        if self.loss.cross_frame_weight > 0 and self.model.get("peak_prior"):
            raise DataError(
                "config: loss.cross_frame_weight reads masks without the peak prior's term; "
                "it cannot be combined with model.peak_prior"
            )
        if self.loss.embed_scope not in EMBED_SCOPES:
            raise DataError(
                f"config: loss.embed_scope must be one of {EMBED_SCOPES}, got {self.loss.embed_scope!r}"
            )


def check_ranges(cfg: TrainConfig) -> None:
    """DataError naming the first number outside its range (NaN is outside every range), so
    that a bad value stops `avis train` before any process starts, not inside the loop."""
    from avis.data.split import AUDIO_POLICIES

    data, optim, loss = cfg.data, cfg.optim, cfg.loss

    def unit(value: float) -> bool:
        return 0.0 <= value <= 1.0

    def at_least(bound: float) -> Callable[[float], bool]:
        return lambda value: value >= bound

    checks: list[tuple[str, Any, Callable[[Any], bool], str]] = [
        ("iterations", cfg.iterations, at_least(1), ">= 1"),
        ("batch_size", cfg.batch_size, at_least(1), ">= 1"),
        ("accumulation", cfg.accumulation, at_least(1), ">= 1"),
        ("processes", cfg.processes, at_least(1), ">= 1"),
        (
            "log_every and checkpoint_every",
            (cfg.log_every, cfg.checkpoint_every),
            lambda v: min(v) >= 1,
            ">= 1 (a checkpoint is always written at the end: checkpoint_every above "
            "`iterations` writes only that one)",
        ),
        ("data.clip_frames", data.clip_frames, at_least(1), ">= 1"),
        ("data.frame_range", data.frame_range, at_least(0), ">= 0"),
        ("data.short_sides", data.short_sides, lambda v: bool(v) and min(v) >= 1, "one or more sides >= 1"),
        ("data.max_size", data.max_size, at_least(1), ">= 1"),
        ("data.crop_prob", data.crop_prob, unit, "in [0, 1]"),
        ("data.flip_prob", data.flip_prob, unit, "in [0, 1]"),
        ("data.frame_flip_prob", data.frame_flip_prob, unit, "in [0, 1]"),
        ("data.twin_paste_prob", data.twin_paste_prob, unit, "in [0, 1]"),
        ("data.occlude_prob", data.occlude_prob, unit, "in [0, 1]"),
        ("data.num_workers", data.num_workers, at_least(0), ">= 0"),
        ("data.audio_policy", data.audio_policy, lambda v: v in AUDIO_POLICIES, f"one of {AUDIO_POLICIES}"),
        ("data.eval_max_videos", data.eval_max_videos, at_least(0), ">= 0 (0 = every video)"),
        ("data.final_from", data.final_from, at_least(0), ">= 0 (0 = no final stage)"),
        ("data.final_short_sides", data.final_short_sides, lambda v: all(side >= 1 for side in v), ">= 1"),
        ("data.final_max_size", data.final_max_size, at_least(0), ">= 0 (0 = data.max_size)"),
        ("data.final_clip_frames", data.final_clip_frames, at_least(0), ">= 0 (0 = data.clip_frames)"),
        ("optim.lr", optim.lr, lambda v: 0.0 < v < float("inf"), "> 0"),
        ("optim.weight_decay", optim.weight_decay, at_least(0), ">= 0"),
        ("optim.backbone_lr_mult", optim.backbone_lr_mult, at_least(0), ">= 0"),
        ("optim.betas", optim.betas, lambda v: len(v) == 2 and all(0.0 <= b < 1.0 for b in v), "two values in [0, 1)"),
        ("optim.clip_grad_norm", optim.clip_grad_norm, at_least(0), ">= 0 (0 = off)"),
        ("optim.warmup_iters", optim.warmup_iters, at_least(0), ">= 0"),
        ("optim.warmup_factor", optim.warmup_factor, lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
        ("optim.decay_steps", optim.decay_steps, lambda v: all(step >= 0 for step in v), "steps >= 0"),
        ("optim.decay_gamma", optim.decay_gamma, lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
        ("loss.no_object_weight", loss.no_object_weight, lambda v: v > 0, "> 0"),
        ("loss.frame_no_object_weight", loss.frame_no_object_weight, lambda v: v is None or v > 0, "> 0 or null"),
        ("loss.num_points", loss.num_points, lambda v: v is None or v >= 1, ">= 1 or null (every grid cell)"),
        ("loss.oversample_ratio", loss.oversample_ratio, at_least(1), ">= 1"),
        ("loss.importance_sample_ratio", loss.importance_sample_ratio, unit, "in [0, 1]"),
        ("loss.pilot_label_noise", loss.pilot_label_noise, unit, "in [0, 1]"),
        ("loss.pilot_shift", loss.pilot_shift, at_least(0), ">= 0"),
        ("seed", cfg.seed, at_least(0), ">= 0"),
        ("threads", cfg.threads, at_least(0), ">= 0 (0 = leave as is)"),
        ("keep_last", cfg.keep_last, at_least(1), ">= 1"),
        ("max_minutes", cfg.max_minutes, at_least(0), ">= 0 (0 = no budget)"),
        ("dist_timeout_minutes", cfg.dist_timeout_minutes, lambda v: v > 0, "> 0"),
        ("ema_decay", cfg.ema_decay, lambda v: 0.0 <= v < 1.0, "in [0, 1) (0 = off)"),
        ("ema_from", cfg.ema_from, at_least(0), ">= 0"),
    ]
    weights = ("class_weight", "mask_weight", "dice_weight", "sim_weight", "anchor_cost",
               "quality_weight", "twin_weight", "embed_weight", "pilot_weight", "cross_frame_weight")  # fmt: skip
    checks += [(f"loss.{name}", getattr(loss, name), at_least(0), ">= 0") for name in weights]
    for key, value, ok, want in checks:
        try:
            good = bool(ok(value))
        except TypeError:  # a list where a number belongs, or the other way round
            good = False
        if not good:
            raise DataError(f"config: {key} must be {want}, got {value!r}")


MAX_REPEAT_DENOMINATOR = 8  # fractional repeat factors: p / q with q <= 8


def repeat_ratio(value: float, key: str) -> Fraction:
    """A repeat factor (>= 1) as the fraction p / q it stands for (1.5 -> 3/2, q <= 8)."""
    if not value >= 1:  # NaN too
        raise DataError(f"config: {key} must be >= 1, got {value}")
    ratio = Fraction(value).limit_denominator(MAX_REPEAT_DENOMINATOR)
    if abs(float(ratio) - value) > 1e-6:
        raise DataError(
            f"config: {key} {value} is not a fraction with a denominator up to "
            f"{MAX_REPEAT_DENOMINATOR} (1.5, 1.25, 2, ...)"
        )
    return ratio


def tiny_recipe() -> TrainConfig:
    """The CPU recipe that learns the synthetic benchmark (see docs/training.md).

    Tuned for 2 CPU cores: 2 local DDP processes of 1 thread each (the tiny model is made of
    many small operations, which two processes run in parallel far better than two threads).
    """
    return TrainConfig(
        model_preset="avism_tiny",
        model={
            "backbone_kwargs": {"norm": "GN", "stem_channels": 32},  # a half-width ResNet-18
            "audio_mask_bias": True,  # masks can switch off where a track is silent
            "per_frame_mask_embed": True,  # a track's mask embedding is refined per frame
            # embedded pixel coordinates: masks can tell look-alikes apart by place (val mAP
            # with component splitting 66.0 -> 69.6, run r8 vs r5; docs/training.md)
            "coord_freqs": 4,
            # test above the 160 px training scale: finer masks (run r27 on unseen seeds 200
            # and 201, splitting on: mAP 69.1 at 192 px, 72.3 at 224; off: level)
            "test_short_side": 224,
            "test_max_size": 448,
            "score_threshold": 0.5,  # keep fewer duplicate tracks (FSLA counts objects per frame)
            # one track per separate blob: the tiny model often gives look-alike instances of a
            # class one shared track (val mAP 51.2 -> 66.0 for r5, 52.1 -> 69.6 for r8)
            "split_components": True,
        },
        # train at 160 px, 2-frame clips (about as many pixels per step as 128 px x 3 frames
        # and 96 px x 5): the network separates look-alike instances at the scale it was
        # trained at, so a larger training scale gives more separated twins and finer masks
        # at the test side (network-alone on unseen seeds 101-103: FSLA / HOTA / mAP 71.4 /
        # 76.0 / 57.6 -> 72.9 / 77.9 / 60.7; runs r20 / r27, docs/training.md),
        # then, from iteration 3900, at the 224 px test side (FixRes): a model trained at
        # 160 px separates look-alike instances at 160 px far more often than at 224, and a
        # short final stage at 224 px carries that to the test side (network alone on unseen
        # seeds 200 and 201 after 500 such iterations: twin mAP 42.4 -> 49.8, mAP 63.8 -> 67.5
        # against as many more at 160 px; runs f0 / f1, docs/training.md)
        data=DataConfig(
            short_sides=[160],
            max_size=320,
            clip_frames=2,
            frame_range=10,
            crop_prob=0.0,
            flip_prob=0.5,
            audio_features="weight_free",
            final_short_sides=[224],
            final_max_size=448,
            final_from=3900,
        ),
        optim=OptimConfig(
            lr=6e-4, clip_grad_norm=1.0, warmup_iters=50, warmup_factor=0.01, decay_steps=[3500]
        ),
        loss=LossConfig(num_points=None, no_object_weight=0.5),
        # about 0.30 s per iteration at 160 px and 0.48 at 224 on the 2-core VM: 3900 + 600
        # iterations fill ~24 of the 25 minutes (the budget moves the decay and the final
        # stage earlier on a slower machine); more iterations were the largest single gain
        # for the network alone (run r15), which the final stage trades a little of
        iterations=4500,
        max_minutes=25.0,  # + ~0.5 min start-up and ~1 min final evaluation: within 30 min
        batch_size=4,
        threads=1,
        processes=2,
        checkpoint_every=250,
        log_every=10,
        eval_every=0,
    )


TRAIN_PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "avism_r50": lambda: TrainConfig(model_preset="avism_r50"),
    "avism_swinl": lambda: TrainConfig(model_preset="avism_swinl"),
    "avism_tiny": tiny_recipe,
}


def from_dict(data: dict[str, Any], base: Any, where: str = "config") -> Any:
    """A copy of dataclass `base` with the (nested) values of `data`; unknown keys are errors."""
    known = {f.name: f for f in fields(base)}
    updates = {}
    for key, value in data.items():
        if key not in known:
            raise DataError(f"{where}: unknown key {key!r}; expected one of {sorted(known)}")
        current = getattr(base, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise DataError(f"{where}: {key} must be a mapping, found {value!r}")
            updates[key] = from_dict(value, current, f"{where}.{key}")
        elif key == "model":
            if value is not None and not isinstance(value, dict):
                raise DataError(f"{where}: model must be a mapping of model fields, found {value!r}")
            updates[key] = {**current, **(value or {})}
        else:
            updates[key] = coerce(value, current, f"{where}.{key}")
    return replace(base, **updates)


def coerce(value: Any, current: Any, where: str) -> Any:
    """Convert `value` to the type of the current value (YAML reads 1e-4 as a string). An
    integer setting takes integral numbers only (1e3 yes, 2.5 no: never truncated), a number
    setting no booleans, a yes/no setting true/false or 0/1."""
    if current is None or value is None:
        return value
    if isinstance(current, list):
        items = value if isinstance(value, list) else [value]
        return [coerce(v, current[0], f"{where}[{i}]") for i, v in enumerate(items)] if current else list(items)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                return {"true": True, "false": False}[value.lower()]
            if value not in (0, 1):  # True / False are 1 / 0
                raise ValueError(value)
            return bool(value)
        if isinstance(value, bool) and not isinstance(current, str):
            raise TypeError(value)  # a yes/no where a number belongs
        if isinstance(current, int):
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError(value)
            return int(number)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, str):
            return str(value)
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        want = next((text for t, text in kind.items() if isinstance(current, t)), type(current).__name__)
        raise DataError(f"{where}: expected {want}, found {value!r}") from err
    return value


def parse_override(text: str) -> dict[str, Any]:
    """`optim.lr=2e-4` -> {"optim": {"lr": "2e-4" parsed by YAML}}."""
    if "=" not in text:
        raise DataError(f"override {text!r}: expected key=value (for example optim.lr=2e-4)")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and value.lower() in ("none", "null"):
        value = None
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string; numbers are friendlier
        for number in (int, float):
            try:
                value = number(value)
                break
            except ValueError:
                pass
    nested: Any = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(
    preset: str = "avism_tiny",
    yaml_path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> TrainConfig:
    """Preset, then the YAML file, then `key=value` overrides."""
    if preset not in TRAIN_PRESETS:
        raise DataError(f"unknown preset {preset!r}; expected one of {sorted(TRAIN_PRESETS)}")
    cfg = TRAIN_PRESETS[preset]()
    if yaml_path is not None:
        path = Path(yaml_path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise DataError(f"{path}: cannot read the training config: {err}") from err
        if not isinstance(data, dict):
            raise DataError(
                f"{path}: expected a mapping of config keys, found {type(data).__name__}"
            )
        cfg = from_dict(data, cfg, str(path))
    for text in overrides or []:
        cfg = from_dict(parse_override(text), cfg, f"override {text!r}")
    cfg.validate()
    return cfg


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with `to_dict` (for example from a checkpoint)."""
    return from_dict(data, TrainConfig(), "saved config")


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
