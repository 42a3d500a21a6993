"""AVISeg data: annotation records, split loading, clip sampling, transforms, batches.

Public API (other modules code against these names):
- `load_split(root, split, *, audio_policy="pad") -> AVISegSplit`
- `ClipSampler`, `ClipTransform`, `ClipDataset(split, sampler, transform, seed)`,
  `collate_clips(samples) -> ClipBatch`
- `load_video(split, video) -> VideoSample`, `VideoDataset(split)` for inference
- records: `Annotations`, `VideoRecord`, `TrackRecord`, `Category`, `read_annotations`,
  `write_annotations`, `parse_annotations`, `annotations_to_json`
- masks: `decode_segmentation`, `encode_mask`

Names are loaded on first use (PEP 562), so the torch-free parts (annotations, masks, the
synthetic generator's worker processes) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "Annotations": "avis.data.annotations",
    "Category": "avis.data.annotations",
    "TrackRecord": "avis.data.annotations",
    "VideoRecord": "avis.data.annotations",
    "annotations_to_json": "avis.data.annotations",
    "parse_annotations": "avis.data.annotations",
    "read_annotations": "avis.data.annotations",
    "write_annotations": "avis.data.annotations",
    "ClipBatch": "avis.data.batch",
    "ClipTargets": "avis.data.batch",
    "ClipDataset": "avis.data.dataset",
    "ClipSample": "avis.data.dataset",
    "VideoDataset": "avis.data.dataset",
    "VideoSample": "avis.data.dataset",
    "collate_clips": "avis.data.dataset",
    "load_video": "avis.data.dataset",
    "decode_segmentation": "avis.data.masks",
    "encode_mask": "avis.data.masks",
    "ClipSampler": "avis.data.sampling",
    "AUDIO_POLICIES": "avis.data.split",
    "AVISegSplit": "avis.data.split",
    "load_split": "avis.data.split",
    "ClipTransform": "avis.data.transforms",
}

__all__ = [
    "AUDIO_POLICIES",
    "AVISegSplit",
    "Annotations",
    "Category",
    "ClipBatch",
    "ClipDataset",
    "ClipSample",
    "ClipSampler",
    "ClipTargets",
    "ClipTransform",
    "TrackRecord",
    "VideoDataset",
    "VideoRecord",
    "VideoSample",
    "annotations_to_json",
    "collate_clips",
    "decode_segmentation",
    "encode_mask",
    "load_split",
    "load_video",
    "parse_annotations",
    "read_annotations",
    "write_annotations",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avis.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from avis.data.annotations import (
        Annotations,
        Category,
        TrackRecord,
        VideoRecord,
        annotations_to_json,
        parse_annotations,
        read_annotations,
        write_annotations,
    )
    from avis.data.batch import ClipBatch, ClipTargets
    from avis.data.dataset import (
        ClipDataset,
        ClipSample,
        VideoDataset,
        VideoSample,
        collate_clips,
        load_video,
    )
    from avis.data.masks import decode_segmentation, encode_mask
    from avis.data.sampling import ClipSampler
    from avis.data.split import AUDIO_POLICIES, AVISegSplit, load_split
    from avis.data.transforms import ClipTransform
