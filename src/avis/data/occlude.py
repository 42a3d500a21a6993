"""Partial occlusion: a training augmentation that hides part of one instance in some frames.

Why (issue 19, nineteenth round): when a track of one of two look-alike sounding instances
(twins) jumps to the other twin, the jump is in the mask features (their twin difference
along the track's embedding turns), and such frames are far more often frames where a twin is
partly hidden or its visible area changes against the other's (occluded by another object,
entering or leaving the picture) than the others (docs/training.md, nineteenth round). A
two-frame training clip in which one instance loses part of its visible area in one frame but
not in the other asks the video queries to keep that instance's identity through exactly such
a change. Measured (runs r83-r85, docs/results/tiny_r83): it does not: the tracks are on the
wrong twin in occluded frames of unseen videos as often as without it, and the twin mAP is 2.1
lower on the mean of three draws. An option, off by default (`data.occlude_prob`).

With probability ``prob`` a clip gets one occluder: one instance visible in the clip is chosen,
and in each of the frames where it is visible, with probability one half (at least one frame),
a band of its bounding box along one side (the same side in every chosen frame, a
``min_cover``..``max_cover`` share of the box's width or height, drawn per frame) is painted
over with a same-size patch of the same frame that holds no annotated instance (mostly
background, as if the instance passed behind something standing in the scene; silent objects
are not annotated, so a patch may hold part of one). Every instance's mask loses the painted
pixels. The soundtrack is untouched: a partly hidden source
still sounds. A frame with no background patch of that size (``tries`` draws) is left as it is.

Letters: T frames, N instances, H x W frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PartialOcclusion:
    prob: float = 0.5  # chance that a clip gets an occluder
    min_cover: float = 0.25  # smallest share of the box's width/height the band covers
    max_cover: float = 0.65  # largest share (< 1: the instance always keeps some pixels)
    tries: int = 20  # background patch positions drawn per frame

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"occlusion probability must be in [0, 1], got {self.prob}")
        if not 0.0 < self.min_cover <= self.max_cover < 1.0:
            raise ValueError(
                f"occlusion cover must satisfy 0 < min <= max < 1, got {self.min_cover}, {self.max_cover}"
            )

    def __call__(
        self, frames: np.ndarray, masks: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, int | None]:
        """frames (T, H, W, 3), masks (N, T, H, W) bool -> frames, masks and the index of the
        occluded instance, or the inputs unchanged and None when the clip gets no occluder."""
        if self.prob <= 0.0 or rng.random() >= self.prob:
            return frames, masks, None
        n, t, h, w = masks.shape
        visible = np.asarray(masks.reshape(n, t, -1).any(-1))  # (N, T)
        candidates = np.nonzero(visible.any(1))[0]
        if len(candidates) == 0:
            return frames, masks, None
        target = int(candidates[rng.integers(len(candidates))])
        shown = np.nonzero(visible[target])[0]
        chosen = shown[rng.random(len(shown)) < 0.5]
        if len(chosen) == 0:
            chosen = shown[rng.integers(len(shown))][None]
        side = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
        occupied = np.asarray(masks.any(0))  # (T, H, W) pixels of any instance
        frames, masks = frames.copy(), masks.copy()
        painted = False
        for k in chosen.tolist():
            band = _band(masks[target, k], side, float(rng.uniform(self.min_cover, self.max_cover)))
            source = self._background_patch(occupied[k], band, rng)
            if source is None:
                continue
            (y0, y1, x0, x1), (sy, sx) = band, source
            frames[k, y0:y1, x0:x1] = frames[k, sy : sy + y1 - y0, sx : sx + x1 - x0]
            masks[:, k, y0:y1, x0:x1] = False
            painted = True
        return frames, masks, target if painted else None

    def _background_patch(
        self, occupied: np.ndarray, band: tuple[int, int, int, int], rng: np.random.Generator
    ) -> tuple[int, int] | None:
        """Top-left (y, x) of a patch the band's size with no instance pixel in ``occupied``
        (H, W), or None when ``tries`` draws find none."""
        y0, y1, x0, x1 = band
        ph, pw = y1 - y0, x1 - x0
        h, w = occupied.shape
        if ph == 0 or pw == 0 or ph > h or pw > w:  # a one-pixel-deep instance: nothing to hide
            return None
        for _ in range(self.tries):
            sy, sx = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
            if not occupied[sy : sy + ph, sx : sx + pw].any():
                return sy, sx
        return None


def _band(mask: np.ndarray, side: int, cover: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), end-exclusive: the ``cover`` share of the bounding box of ``mask``
    (H, W) along ``side`` (0 top, 1 bottom, 2 left, 3 right), at least one pixel deep and
    always short of the whole box."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    extent = (y1 - y0) if side < 2 else (x1 - x0)
    depth = min(max(int(round(cover * extent)), 1), extent - 1) if extent > 1 else 0
    if side == 0:
        return y0, y0 + depth, x0, x1
    if side == 1:
        return y1 - depth, y1, x0, x1
    if side == 2:
        return y0, y1, x0, x0 + depth
    return y0, y1, x1 - depth, x1
