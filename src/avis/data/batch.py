"""Typed training batches: what the data layer hands to the model and the losses.

Letters: B clips, T frames per clip, N instances of a clip, D audio feature size,
Hp x Wp the padded frame size (a multiple of the size divisibility, 32 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ClipTargets:
    """Ground truth of one clip, in the clip's padded frame grid."""

    labels: Tensor  # (N,) int64, class index 0..K-1
    track_ids: Tensor  # (N,) int64, annotation id of the instance track
    masks: Tensor  # (N, T, Hp, Wp) bool, all False where the instance is not sounding
    valid: Tensor  # (N, T) bool, True where the GT segmentation of that frame is not null
    # (and, after crop augmentation, still has pixels); masks[n, t] is all False where
    # valid[n, t] is False. N may be 0. See avis.data.dataset for which tracks are kept.

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipTargets:
        tensors = (self.labels, self.track_ids, self.masks, self.valid)
        return ClipTargets(*(t.to(device, non_blocking=non_blocking) for t in tensors))

    def pin_memory(self) -> ClipTargets:
        """A copy in pinned host memory (DataLoader(pin_memory=True) calls this)."""
        return ClipTargets(*(t.pin_memory() for t in (self.labels, self.track_ids, self.masks, self.valid)))


@dataclass
class ClipBatch:
    """B clips of T frames each, zero-padded bottom/right to a common (Hp, Wp)."""

    frames: Tensor  # (B, T, 3, Hp, Wp) float32 RGB in 0..255, zero outside image_sizes
    audio: Tensor  # (B, T, D) float32, the audio feature of each frame's second
    image_sizes: list[tuple[int, int]]  # true (h, w) of each clip after transforms
    targets: list[ClipTargets]  # one per clip
    video_ids: list[int]  # AVISeg video id of each clip
    frame_indices: Tensor  # (B, T) int64, frame numbers in the source video

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        return ClipBatch(
            frames=self.frames.to(device, non_blocking=non_blocking),
            audio=self.audio.to(device, non_blocking=non_blocking),
            image_sizes=self.image_sizes,
            targets=[t.to(device, non_blocking=non_blocking) for t in self.targets],
            video_ids=self.video_ids,
            frame_indices=self.frame_indices.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> ClipBatch:
        """A copy in pinned host memory, for non-blocking copies to a GPU (DataLoader(pin_memory=True))."""
        return ClipBatch(
            frames=self.frames.pin_memory(),
            audio=self.audio.pin_memory(),
            image_sizes=self.image_sizes,
            targets=[t.pin_memory() for t in self.targets],
            video_ids=self.video_ids,
            frame_indices=self.frame_indices.pin_memory(),
        )
