"""AVISeg data: annotation records, split loading, clip sampling, transforms, batches.

Public API (other modules code against these names):
- `load_split(root, split, *, audio_policy="pad") -> AVISegSplit`
- `ClipSampler`, `ClipTransform`, `ClipDataset(split, sampler, transform, seed)`,
  `collate_clips(samples) -> ClipBatch`
- `load_video(split, video) -> VideoSample`, `VideoDataset(split)` for inference
- records: `Annotations`, `VideoRecord`, `TrackRecord`, `Category`, `read_annotations`,
  `write_annotations`, `parse_annotations`, `annotations_to_json`
- masks: `decode_segmentation`, `encode_mask`
"""

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
