"""Twin paste: a training augmentation that adds a look-alike sounding instance to a clip.

The hardest case of AVIS is two sounding instances of one class (two guitars, two dogs): the
model must give each its own track although nothing but place tells them apart. With
probability ``prob`` a clip gets a copy of one of its sounding instances: the instance's pixels
(its visible mask) are pasted at another place, shifted by an offset that drifts slowly with
frame time (the copy moves like the original plus a small steady motion of its own), and the
copy becomes a new track of the same class, sounding wherever the original sounds.

Physically this is a second source of the same class sounding in step with the first, which
the soundtrack already allows (sounding state is per class on the synthetic benchmark; a mono
mix of two identical sources differs only in level). Only instances whose mask is present in
every frame of the clip are copied, so the copy is never seen silent; the copy is pasted on
top (it occludes whatever lies below, and the masks of those instances lose the covered
pixels).

Letters: T frames, N instances, H x W frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TwinPaste:
    prob: float = 0.5  # chance that a clip gets a pasted twin
    drift: float = 0.01  # largest extra motion of the copy per frame, as a fraction of the side
    max_overlap: float = 0.1  # largest share of the original's area the copy may cover
    tries: int = 10  # offsets drawn before giving up on the clip

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"twin paste probability must be in [0, 1], got {self.prob}")

    def __call__(
        self, frames: np.ndarray, masks: np.ndarray, times: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, int | None]:
        """frames (T, H, W, 3), masks (N, T, H, W) bool, times (T,) frame indices ->
        frames, masks (N or N+1, T, H, W) and the index of the copied instance (the new row is
        the last one), or the inputs unchanged and None when the clip gets no twin."""
        if self.prob <= 0.0 or rng.random() >= self.prob:
            return frames, masks, None
        n, t, h, w = masks.shape
        whole = [i for i in range(n) if masks[i].reshape(t, -1).any(1).all()]
        if not whole:
            return frames, masks, None
        src = whole[int(rng.integers(len(whole)))]
        shifts = self._offsets(masks[src], np.asarray(times), rng)
        if shifts is None:
            return frames, masks, None
        frames = frames.copy()
        copy = np.zeros((t, h, w), dtype=bool)
        for k, (dy, dx) in enumerate(shifts):
            ys, xs = np.nonzero(masks[src, k])
            frames[k, ys + dy, xs + dx] = frames[k, ys, xs]
            copy[k, ys + dy, xs + dx] = True
        masks = np.concatenate([masks & ~copy[None], copy[None]])
        return frames, masks, src

    def _offsets(
        self, mask: np.ndarray, times: np.ndarray, rng: np.random.Generator
    ) -> list[tuple[int, int]] | None:
        """Per-frame (dy, dx) that keep the copy of ``mask`` (T, H, W) inside the frame and off
        most of the original, or None when ``tries`` draws find none."""
        t, h, w = mask.shape
        boxes = []  # per frame (y0, y1, x0, x1), inclusive
        for k in range(t):
            ys, xs = np.nonzero(mask[k])
            boxes.append((ys.min(), ys.max(), xs.min(), xs.max()))
        y0, y1, x0, x1 = boxes[0]
        elapsed = times - times[0]
        area = mask.reshape(t, -1).sum(1)
        for _ in range(self.tries):
            dy0 = rng.integers(-y0, h - y1)  # keeps frame 0's copy inside
            dx0 = rng.integers(-x0, w - x1)
            vy, vx = rng.uniform(-self.drift, self.drift, size=2) * (h, w)
            shifts = [(int(round(dy0 + vy * e)), int(round(dx0 + vx * e))) for e in elapsed]
            if all(self._fits(box, s, h, w) for box, s in zip(boxes, shifts)) and all(
                _overlap(mask[k], s) <= self.max_overlap * area[k] for k, s in enumerate(shifts)
            ):
                return shifts
        return None

    @staticmethod
    def _fits(box: tuple[int, int, int, int], shift: tuple[int, int], h: int, w: int) -> bool:
        (y0, y1, x0, x1), (dy, dx) = box, shift
        return y0 + dy >= 0 and y1 + dy < h and x0 + dx >= 0 and x1 + dx < w


def _overlap(mask: np.ndarray, shift: tuple[int, int]) -> int:
    """Pixels of ``mask`` (H, W) that its copy shifted by (dy, dx) covers."""
    dy, dx = shift
    h, w = mask.shape
    if abs(dy) >= h or abs(dx) >= w:
        return 0
    a = mask[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    b = mask[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return int((a & b).sum())
