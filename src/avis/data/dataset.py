"""Torch datasets over an AVISegSplit: training clips, whole videos for inference, collation.

Targets of a clip (what the losses receive, see `ClipTargets` in batch.py):
- one row per instance track of the video; `labels` = class index 0..K-1, `track_ids` = the
  annotation id (stable across clips of the same video);
- `valid[n, t]` is True iff the GT segmentation of that frame is not null (the instance sounds
  and is visible) AND its mask still has pixels after the crop; `masks[n, t]` is all False
  wherever `valid[n, t]` is False. Not sounding / not visible = an empty mask with valid False;
- by default tracks with no valid frame in the clip are dropped (`keep_empty_tracks=False`);
  with `keep_empty_tracks=True` they stay, as rows whose `valid` is all False. N may be 0
  (a clip in which nothing sounds): labels/track_ids (0,), masks (0, T, Hp, Wp), valid (0, T).
- with a `TwinPaste` (training augmentation, off by default) a clip may get one more row: a
  pasted copy of one of its sounding instances, same label, track id = the clip's largest + 1;
- with a `PartialOcclusion` (training augmentation, off by default) part of one instance may be
  painted over with background in some frames; every mask loses those pixels.

Determinism: item `index` of epoch `epoch` uses `np.random.default_rng([seed, epoch, index])`
and, for the occlusion alone, `np.random.default_rng([seed, epoch, index, 1])` (so switching it
leaves the other draws as they were), and nothing else: a resumed run sees exactly the same
clips. `index` may be any int >= 0
(video = index mod number of videos), which suits iteration-based training.

Letters: B clips, T frames, N instances, D audio size, H x W frame size, Hp x Wp padded size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from avis.data.annotations import VideoRecord
from avis.data.batch import ClipBatch, ClipTargets
from avis.data.occlude import PartialOcclusion
from avis.data.paste import TwinPaste
from avis.data.sampling import ClipSampler
from avis.data.split import AVISegSplit
from avis.data.transforms import ClipAugParams, ClipTransform, apply_clip_transform, spatial_view

SIZE_DIVISIBILITY = 32


@dataclass
class ClipSample:
    """One transformed training clip (before padding)."""

    frames: Tensor  # (T, 3, h, w) float32 0..255
    audio: Tensor  # (T, D) float32
    labels: Tensor  # (N,) int64
    track_ids: Tensor  # (N,) int64
    masks: Tensor  # (N, T, h, w) bool
    valid: Tensor  # (N, T) bool
    video_id: int
    frame_indices: Tensor  # (T,) int64


@dataclass
class VideoSample:
    """A whole video for inference, at its original size."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    audio: np.ndarray  # (T, D) float32
    video_id: int
    name: str
    height: int
    width: int


class ClipDataset(Dataset):
    def __init__(
        self,
        split: AVISegSplit,
        sampler: ClipSampler,
        transform: ClipTransform,
        seed: int = 0,
        *,
        keep_empty_tracks: bool = False,
        paste: TwinPaste | None = None,
        occlude: PartialOcclusion | None = None,
    ) -> None:
        if not split.videos:
            raise ValueError(f"split '{split.split}' at {split.root} has no videos")
        self.split, self.sampler, self.transform = split, sampler, transform
        self.seed, self.epoch, self.keep_empty_tracks = seed, 0, keep_empty_tracks
        self.paste = paste  # twin paste (avis.data.paste), None = off
        self.occlude = occlude  # partial occlusion (avis.data.occlude), None = off

    def __len__(self) -> int:
        return len(self.split.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> ClipSample:
        return self.sample(index, self.epoch)

    def sample(self, index: int, epoch: int) -> ClipSample:
        rng = np.random.default_rng([self.seed, epoch, index])
        video = self.split.videos[index % len(self.split.videos)]
        times = self.sampler(video.length, rng)
        frames = self.split.load_frames(video, times)  # (T, H, W, 3)
        tracks = self.split.tracks[video.id]
        masks = np.zeros((len(tracks), len(times), video.height, video.width), dtype=bool)
        for n, track in enumerate(tracks):
            for k, t in enumerate(times):
                if track.segmentations[t] is not None:
                    masks[n, k] = track.mask(int(t))
        labels = [self.split.label(t.category_id) for t in tracks]
        ids = [t.id for t in tracks]
        if self.paste is not None:
            frames, masks, src = self.paste(frames, masks, times, rng)
            if src is not None:  # the copy is a new track of the same class
                labels.append(labels[src])
                ids.append(max(ids) + 1)
        if self.occlude is not None:  # its own draws: switching it leaves the others' alone
            frames, masks, _ = self.occlude(frames, masks, np.random.default_rng([self.seed, epoch, index, 1]))
        params = self.transform.sample(frames.shape[1], frames.shape[2], np.asarray(times), rng)
        frames_t, masks_t = apply_clip_transform(frames, masks, params)
        valid = masks_t.flatten(2).any(-1)  # (N, T): non-null and still visible after the crop
        keep = torch.ones(len(ids), dtype=torch.bool) if self.keep_empty_tracks else valid.any(1)
        audio = self.split.load_audio(video)[times]
        if self.split.spatial_shape is not None:  # where the sound is, seen as the clip is
            spatial = clip_spatial(self.split.load_spatial(video)[times], params, video.width)
            audio = np.concatenate([audio, spatial.reshape(len(times), -1)], axis=1)
        return ClipSample(
            frames=frames_t,
            audio=torch.from_numpy(audio),
            labels=torch.tensor(labels, dtype=torch.int64)[keep],
            track_ids=torch.tensor(ids, dtype=torch.int64)[keep],
            masks=masks_t[keep],
            valid=valid[keep],
            video_id=video.id,
            frame_indices=torch.from_numpy(times),
        )


def clip_spatial(spatial: np.ndarray, params: ClipAugParams, width: int) -> np.ndarray:
    """Spatial-audio maps (T, B, P) of a clip's frames seen through its crop and flip."""
    if params.crop_size is None or params.crop_offsets is None:
        edges = [(0.0, 1.0)] * len(spatial)
    else:
        cw = params.crop_size[1]
        edges = [(x0 / width, (x0 + cw) / width) for _, x0 in params.crop_offsets]
    return np.stack([spatial_view(spatial[k], x0, x1, params.flipped(k)) for k, (x0, x1) in enumerate(edges)])


def padded_size(sizes: list[tuple[int, int]], divisibility: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    """Smallest (Hp, Wp) holding every size, rounded up to a multiple of `divisibility`."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    return -(-h // divisibility) * divisibility, -(-w // divisibility) * divisibility


def collate_clips(samples: list[ClipSample], divisibility: int = SIZE_DIVISIBILITY) -> ClipBatch:
    """Pad every clip bottom/right with zeros to a common (Hp, Wp) and stack."""
    if not samples:
        raise ValueError("collate_clips needs at least one sample")
    lengths = {s.frames.shape[0] for s in samples}
    if len(lengths) != 1:
        raise ValueError(f"all clips of a batch need the same number of frames, found {sorted(lengths)}")
    sizes = [(int(s.frames.shape[-2]), int(s.frames.shape[-1])) for s in samples]
    hp, wp = padded_size(sizes, divisibility)
    t = lengths.pop()
    frames = torch.zeros((len(samples), t, 3, hp, wp), dtype=torch.float32)  # (B, T, 3, Hp, Wp)
    targets = []
    for b, (s, (h, w)) in enumerate(zip(samples, sizes)):
        frames[b, :, :, :h, :w] = s.frames
        masks = torch.zeros((s.masks.shape[0], t, hp, wp), dtype=torch.bool)  # (N, T, Hp, Wp)
        masks[:, :, :h, :w] = s.masks
        targets.append(ClipTargets(labels=s.labels, track_ids=s.track_ids, masks=masks, valid=s.valid))
    return ClipBatch(
        frames=frames,
        audio=torch.stack([s.audio for s in samples]),
        image_sizes=sizes,
        targets=targets,
        video_ids=[s.video_id for s in samples],
        frame_indices=torch.stack([s.frame_indices for s in samples]),
    )


def load_video(split: AVISegSplit, video: VideoRecord | int) -> VideoSample:
    """All frames (uint8, original size) and audio features of one video."""
    record = split.video(video) if isinstance(video, int) else video
    return VideoSample(
        frames=split.load_frames(record),
        audio=split.load_audio_input(record),
        video_id=record.id,
        name=record.name,
        height=record.height,
        width=record.width,
    )


class VideoDataset(Dataset):
    """Whole videos of a split in file order (for inference / evaluation)."""

    def __init__(self, split: AVISegSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, index: int) -> VideoSample:
        return load_video(self.split, self.split.videos[index])
