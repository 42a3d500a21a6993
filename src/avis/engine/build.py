"""Build the training components (model, criterion, data, evaluator) from a `TrainConfig`.

The trainer itself receives these objects; this module is the one place that reads the
config to make them.
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from typing import Any, cast

from avis.engine.config import TrainConfig, coerce, repeat_ratio
from avis.errors import DataError
from avis.losses import AVISMCriterion, LossWeights

LOG = logging.getLogger("avis.train")


def model_config(cfg: TrainConfig, num_classes: int | None = None, audio_dim: int | None = None):
    """The AVISMConfig: preset, then `cfg.model` overrides; classes follow the data unless set."""
    from avis.models.config import PRESETS, AVISMConfig

    if cfg.model_preset not in PRESETS:
        raise DataError(
            f"config: unknown model_preset {cfg.model_preset!r}; expected one of {sorted(PRESETS)}"
        )
    base = PRESETS[cfg.model_preset]()
    known = {f.name for f in fields(AVISMConfig)}
    updates: dict[str, Any] = {}
    for key, value in cfg.model.items():
        if key not in known:
            raise DataError(f"config: model.{key} is not an AVISMConfig field")
        updates[key] = coerce(value, getattr(base, key), f"config model.{key}")
    model_cfg = replace(base, **updates)
    if (
        num_classes is not None
        and "num_classes" not in cfg.model
        and model_cfg.num_classes != num_classes
    ):
        LOG.info("model num_classes %d -> %d (from the data)", model_cfg.num_classes, num_classes)
        model_cfg = replace(model_cfg, num_classes=num_classes)
    if audio_dim is not None and model_cfg.audio_dim != audio_dim:
        raise DataError(
            f"the data has {audio_dim}-d audio features but the model expects {model_cfg.audio_dim}"
        )
    return model_cfg


def check_spatial_shape(split, model_cfg) -> None:
    """DataError unless the split's spatial-audio maps have the model's (bands, positions)."""
    from avis.data.split import SPATIAL_DIR

    want = (model_cfg.spatial_audio_bands, model_cfg.spatial_audio_bins)
    if model_cfg.spatial_audio and split.videos and split.spatial_shape != want:
        raise DataError(
            f"{split.split_dir / SPATIAL_DIR}: spatial audio maps of shape {split.spatial_shape}, "
            f"the model reads {want} (bands, positions)"
        )


def build_criterion(cfg: TrainConfig, num_classes: int) -> AVISMCriterion:
    loss = cfg.loss
    return AVISMCriterion(
        num_classes,
        weights=LossWeights(
            loss.class_weight,
            loss.mask_weight,
            loss.dice_weight,
            loss.sim_weight,
            loss.quality_weight,
            loss.embed_weight,
            loss.pilot_weight,
        ),
        no_object_weight=loss.no_object_weight,
        frame_no_object_weight=loss.frame_no_object_weight,
        num_points=loss.num_points,
        oversample_ratio=loss.oversample_ratio,
        importance_sample_ratio=loss.importance_sample_ratio,
        official_quirks=loss.official_quirks,
        anchor_cost=loss.anchor_cost,
        twin_weight=loss.twin_weight,
        pilot_label_noise=loss.pilot_label_noise,
        pilot_shift=loss.pilot_shift,
        embed_scope=loss.embed_scope,
        cross_frame_weight=loss.cross_frame_weight,
    )


def build_train_dataset(cfg: TrainConfig):
    """(ClipDataset, split) of the training split."""
    from avis.data import ClipDataset, ClipSampler, ClipTransform, load_split
    from avis.data.occlude import PartialOcclusion
    from avis.data.paste import TwinPaste
    from avis.data.split import AudioPolicy

    if not cfg.data.root:
        raise DataError("config: data.root is empty (give --data <AVISeg folder>)")
    policy = cast(AudioPolicy, cfg.data.audio_policy)  # load_split checks the value
    model_cfg = model_config(cfg)
    split = load_split(cfg.data.root, cfg.data.train_split, audio_policy=policy, spatial_audio=model_cfg.spatial_audio)
    check_spatial_shape(split, model_cfg)
    sampler = ClipSampler(num_frames=cfg.data.clip_frames, frame_range=cfg.data.frame_range)
    transform = ClipTransform(
        short_sides=tuple(cfg.data.short_sides),
        max_size=cfg.data.max_size,
        flip_prob=cfg.data.flip_prob,
        crop_prob=cfg.data.crop_prob,
        frame_flip_prob=cfg.data.frame_flip_prob,
    )
    prob = cfg.data.twin_paste_prob
    if not 0.0 <= prob <= 1.0:
        raise DataError(f"config: data.twin_paste_prob must be in [0, 1], got {prob}")
    paste = TwinPaste(prob=prob) if prob > 0 else None
    occlude = PartialOcclusion(prob=cfg.data.occlude_prob) if cfg.data.occlude_prob > 0 else None
    return ClipDataset(split, sampler, transform, seed=cfg.seed, paste=paste, occlude=occlude), split


def build_final_stage_dataset(cfg: TrainConfig, dataset):
    """The training clips of the final stage (`data.final_from`): `dataset` (a ClipDataset)
    with its frames resized to `data.final_short_sides`; None when the config has no final
    stage. Same split, clip times and augmentation draws, only the size differs, unless
    `data.final_clip_frames` asks for another clip length (then the clips' frames are drawn
    for that length)."""
    from avis.data import ClipDataset

    if cfg.data.final_from <= 0:
        return None
    sampler = dataset.sampler
    if cfg.data.final_clip_frames:
        sampler = replace(sampler, num_frames=cfg.data.final_clip_frames)
    transform = replace(
        dataset.transform,
        short_sides=tuple(cfg.data.final_short_sides),
        max_size=cfg.data.final_max_size or cfg.data.max_size,
    )
    return ClipDataset(
        dataset.split, sampler, transform, seed=dataset.seed,
        keep_empty_tracks=dataset.keep_empty_tracks, paste=dataset.paste, occlude=dataset.occlude,
    )  # fmt: skip


def video_repeats(
    split, multi_instance_repeat: float, key: str = "data.multi_instance_repeat"
) -> list[int] | None:
    """Per-video repeat factors of the training order (`data.multi_instance_repeat`, or the
    final stage's `data.final_multi_instance_repeat`): videos in which some class has two or
    more instance tracks are shown `multi_instance_repeat` times as often as the others; None
    when the factor is 1. A fractional factor p/q (1.5 = 3/2, denominators up to 8) becomes
    p showings of those videos and q of every other per pass."""
    ratio = repeat_ratio(multi_instance_repeat, key)
    if ratio == 1:
        return None
    repeats = []
    for video in split.videos:
        cats = [t.category_id for t in split.tracks[video.id]]
        several = len(cats) > len(set(cats))
        repeats.append(ratio.numerator if several else ratio.denominator)
    return repeats


def build_model(model_cfg, init_weights: str = ""):
    from avis.models.avism import build_avism

    model = build_avism(model_cfg)
    if init_weights:
        from avis.models.checkpoint import load_state_dict_strict, read_checkpoint, state_dict_of

        obj = read_checkpoint(init_weights)
        load_state_dict_strict(model, state_dict_of(obj, init_weights), init_weights)
        LOG.info("initialised the model from %s", init_weights)
    return model
