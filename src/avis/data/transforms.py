"""Clip-consistent augmentation: one set of random choices per clip, applied to every frame.

Order: crop (optional) -> resize (short side from a list, capped by max_size) -> flip (optional).
- crop: one crop size per clip (a fraction of the frame in `crop_scale`); its top-left offset
  moves linearly from a start to an end offset across the clip (by frame time), the end at most
  `crop_drift` of the frame side away from the start, so the camera seems to pan smoothly.
- resize: frames bilinear (antialiased when shrinking), masks nearest with pixel-centre
  alignment (`nearest-exact`), so frames and masks stay aligned.
- flip: horizontal, the same for the whole clip; with `frame_flip_prob` a clip's flips are
  drawn per frame instead (each frame mirrored or not at even odds), so the instances' places
  can mirror between a clip's frames while their looks and sounds stay theirs.
- spatial-audio maps (where the sound is, over horizontal positions): `spatial_view` resamples
  their positions to a crop's range and mirrors them for a flip.

Letters: T frames, N instances, H x W input size, h x w output size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ClipAugParams:
    """The random choices made for one clip (exposed for tests and debugging)."""

    crop_size: tuple[int, int] | None  # (ch, cw) or None for no crop
    crop_offsets: np.ndarray | None  # (T, 2) int (y0, x0) per frame
    out_size: tuple[int, int]  # (h, w)
    flip: bool
    frame_flips: tuple[bool, ...] | None = None  # (T,) per-frame flips; None = `flip` for every frame

    def flipped(self, k: int) -> bool:
        """Whether frame k of the clip is mirrored."""
        return self.flip if self.frame_flips is None else self.frame_flips[k]


def resized_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the short side = short_side unless the long side would exceed max_size."""
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@dataclass(frozen=True)
class ClipTransform:
    short_sides: tuple[int, ...] = (128,)
    max_size: int = 1333
    flip_prob: float = 0.0
    crop_prob: float = 0.0
    crop_scale: tuple[float, float] = (0.6, 1.0)  # crop side / frame side, drawn per clip
    crop_drift: float = 0.1  # largest offset change across the clip, as a fraction of the side
    frame_flip_prob: float = 0.0  # chance that a clip's flips are drawn per frame (even odds each)

    def sample(self, height: int, width: int, times: np.ndarray, rng: np.random.Generator) -> ClipAugParams:
        """Draw the clip's choices; `times` (T,) are the frame indices (for the crop motion)."""
        crop_size = offsets = None
        h, w = height, width
        if self.crop_prob > 0 and rng.random() < self.crop_prob:
            frac = rng.uniform(*self.crop_scale)
            ch, cw = max(1, round(height * frac)), max(1, round(width * frac))
            start = np.array([rng.integers(height - ch + 1), rng.integers(width - cw + 1)], dtype=np.float64)
            drift = rng.uniform(-self.crop_drift, self.crop_drift, size=2) * np.array([height, width])
            end = np.clip(start + drift, 0, [height - ch, width - cw])
            span = max(float(times[-1] - times[0]), 1.0)
            pos = ((times - times[0]) / span)[:, None]  # (T, 1) in 0..1
            offsets = np.rint(start + pos * (end - start)).astype(np.int64)
            crop_size, (h, w) = (ch, cw), (ch, cw)
        short = int(self.short_sides[int(rng.integers(len(self.short_sides)))])
        out_size = resized_size(h, w, short, self.max_size)
        flip = bool(self.flip_prob > 0 and rng.random() < self.flip_prob)
        frame_flips = None
        if self.frame_flip_prob > 0 and rng.random() < self.frame_flip_prob:  # the clip's last draws
            frame_flips = tuple(bool(v) for v in rng.random(len(times)) < 0.5)
        return ClipAugParams(
            crop_size=crop_size, crop_offsets=offsets, out_size=out_size, flip=flip, frame_flips=frame_flips
        )

    def __call__(
        self, frames: np.ndarray, masks: np.ndarray, times: np.ndarray, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        """frames (T, H, W, 3) uint8, masks (N, T, H, W) bool -> (T, 3, h, w) float32 0..255, (N, T, h, w) bool."""
        params = self.sample(frames.shape[1], frames.shape[2], np.asarray(times), rng)
        return apply_clip_transform(frames, masks, params)


def apply_clip_transform(frames: np.ndarray, masks: np.ndarray, params: ClipAugParams) -> tuple[Tensor, Tensor]:
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    target = torch.from_numpy(np.ascontiguousarray(masks)).to(torch.uint8)  # (N, T, H, W)
    if params.crop_size is not None:
        ch, cw = params.crop_size
        offsets = params.crop_offsets
        if offsets is None:
            raise ValueError("ClipAugParams.crop_offsets must be a (T, 2) array when crop_size is set, found None")
        video = torch.stack([video[t, :, y : y + ch, x : x + cw] for t, (y, x) in enumerate(offsets)])
        target = torch.stack([target[:, t, y : y + ch, x : x + cw] for t, (y, x) in enumerate(offsets)], 1)
    if tuple(video.shape[-2:]) != params.out_size:
        shrink = params.out_size[0] < video.shape[-2]
        video = F.interpolate(video, size=params.out_size, mode="bilinear", align_corners=False, antialias=shrink)
        video = video.clamp_(0, 255)
        n, t = target.shape[:2]
        if n:
            target = F.interpolate(target.reshape(1, n * t, *target.shape[-2:]), size=params.out_size, mode="nearest-exact")
            target = target.reshape(n, t, *params.out_size)
        else:
            target = target.new_zeros((0, t, *params.out_size))
    if params.frame_flips is not None:
        mirror = torch.tensor(params.frame_flips)  # (T,)
        video = torch.where(mirror[:, None, None, None], video.flip(-1), video)
        target = torch.where(mirror[None, :, None, None], target.flip(-1), target)
    elif params.flip:
        video, target = video.flip(-1), target.flip(-1)
    return video.contiguous(), target.bool().contiguous()


def spatial_view(spatial: np.ndarray, x0: float, x1: float, flip: bool) -> np.ndarray:
    """The map (..., P) seen through a horizontal crop and a flip of the picture.

    x0, x1: the crop's left and right edge as fractions of the frame width (0, 1 = none).
    Position bins are resampled (linear) to the crop's range, then mirrored for a flip.
    """
    bins = spatial.shape[-1]
    if (x0, x1) != (0.0, 1.0):
        centres = (np.arange(bins) + 0.5) / bins  # of the output bins, in the crop
        source = (x0 + centres * (x1 - x0)) * bins - 0.5  # fractional input bin
        source = np.clip(source, 0.0, bins - 1.0)
        lo = np.floor(source).astype(np.int64)
        hi = np.minimum(lo + 1, bins - 1)
        w = (source - lo).astype(spatial.dtype)
        spatial = spatial[..., lo] * (1 - w) + spatial[..., hi] * w
    return np.ascontiguousarray(spatial[..., ::-1] if flip else spatial)
