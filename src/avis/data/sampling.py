"""Training clip sampling, as the official AVISM/VITA recipe.

A reference frame is drawn uniformly from the video; the other `num_frames - 1` frames are
drawn from the frames within `frame_range` of it (the reference excluded); the clip is sorted.

The official code draws the other frames with `np.random.choice(..., replace=True)`, so a clip
can repeat a frame. Here `replace=False` is the default (distinct frames whenever the window
holds enough of them, which makes every clip frame informative); `replace=True` reproduces
the official draw. Either way a window too small for distinct frames falls back to replacement.

Letters: T frames per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CLIP_FRAMES = 5
DEFAULT_FRAME_RANGE = 20


@dataclass(frozen=True)
class ClipSampler:
    num_frames: int = DEFAULT_CLIP_FRAMES
    frame_range: int = DEFAULT_FRAME_RANGE
    replace: bool = False

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_range < 0:
            raise ValueError(f"need num_frames >= 1 and frame_range >= 0, got {self.num_frames}, {self.frame_range}")

    def __call__(self, video_length: int, rng: np.random.Generator) -> np.ndarray:
        """(T,) int64 sorted frame indices in [0, video_length)."""
        if video_length < 1:
            raise ValueError(f"cannot sample a clip from a video of {video_length} frames")
        ref = int(rng.integers(video_length))
        start, end = max(0, ref - self.frame_range), min(video_length, ref + self.frame_range + 1)
        others = np.array([t for t in range(start, end) if t != ref], dtype=np.int64)
        need = self.num_frames - 1
        if need == 0:
            chosen = np.zeros(0, dtype=np.int64)
        elif len(others) == 0:
            chosen = np.full(need, ref, dtype=np.int64)
        else:
            chosen = rng.choice(others, size=need, replace=self.replace or len(others) < need)
        return np.sort(np.concatenate([chosen, [ref]]).astype(np.int64))
