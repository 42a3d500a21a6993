"""Loss targets derived from a batch's `ClipTargets`.

Letters: B clips, T frames, N instances of a clip, n instances sounding in one frame,
Hp x Wp the padded frame grid, K classes.

Rules (VITA / official AVISM behaviour, see docs/training.md):
- An instance is *present* in a frame when its GT is not null there and its mask is not
  empty (a crop can empty a mask; the official mapper then marks the frame as absent).
- Video level keeps every instance present in at least one frame of the clip, with its masks
  over all T frames (empty where it is silent): a video query learns the whole track,
  including when it must be silent.
- Frame level: the targets of frame t are the instances present in frame t; silent or
  invisible instances are not targets of that frame.
- `official_quirks=True`: an instance not present (null) in the clip's first frame gets the
  no-object class K at both levels, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avis.data.batch import ClipTargets
from avis.losses.matcher import MatchTarget


@dataclass
class VideoTargets:
    """Loss targets of one clip."""

    labels: Tensor  # (N,) int64 in 0..K (K only under official quirks)
    ids: Tensor  # (N,) int64 track id
    masks: Tensor  # (N, T, Hp, Wp) bool, empty where not present
    present: Tensor  # (N, T) bool

    def as_match_target(self) -> MatchTarget:
        return MatchTarget(labels=self.labels, masks=self.masks)

    def frame_target(self, t: int) -> MatchTarget:
        keep = self.present[:, t]
        return MatchTarget(labels=self.labels[keep], masks=self.masks[keep, t].unsqueeze(1))

    def frame_ids(self, t: int) -> Tensor:
        return self.ids[self.present[:, t]]


def prepare_video_targets(
    clip: ClipTargets, num_classes: int, official_quirks: bool = False
) -> VideoTargets:
    """One clip's `ClipTargets` -> `VideoTargets` (instances never present are dropped)."""
    masks = clip.masks.bool()  # (N, T, Hp, Wp)
    present = clip.valid.bool() & masks.flatten(2).any(-1)  # (N, T)
    keep = present.any(dim=1)
    labels = clip.labels.long().clone()
    if official_quirks and labels.numel() > 0:
        labels[~clip.valid.bool()[:, 0]] = num_classes
    return VideoTargets(
        labels=labels[keep],
        ids=clip.track_ids.long()[keep],
        masks=masks[keep],
        present=present[keep],
    )


def frame_match_targets(videos: list[VideoTargets], num_frames: int) -> list[MatchTarget]:
    """The frame-level targets of all B*T frames, clip-major (index b*T + t)."""
    return [video.frame_target(t) for video in videos for t in range(num_frames)]


def count_frame_targets(videos: list[VideoTargets]) -> int:
    return int(sum(int(video.present.sum()) for video in videos))


def empty_clip_targets(num_frames: int, height: int, width: int) -> ClipTargets:
    """A clip without any instance (handy for tests and for silent clips)."""
    return ClipTargets(
        labels=torch.zeros(0, dtype=torch.int64),
        track_ids=torch.zeros(0, dtype=torch.int64),
        masks=torch.zeros(0, num_frames, height, width, dtype=torch.bool),
        valid=torch.zeros(0, num_frames, dtype=torch.bool),
    )
