"""Where the sound comes from, as a term of the mask features (an avis option, off in the
official model).

Each frame's spatial-audio map (B bands x P horizontal positions, `avis.audio.spatial`) is
read at every column of the mask-feature grid (linear between the position bins, which span
the picture's width, not its padding) and projected to the mask-feature channels:

    F_t[:, y, x] += W . map_t[:, x]    (the same for every row y)

A track's mask logit e . F_t then gains (W^T e) . map_t[:, x]: a weighting of the bands by
the track, high in the columns where *its* bands sound. Two look-alikes that sound at
different pitches and places (two guitars playing different notes) thereby differ in their
pixel features, in every frame. The two projections (frame decoder's and video module's
mask features) start at zero, so training starts from the model without the term.

Letters: N frames, B bands, P position bins, Cm mask channels, Hm x Wm mask grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class SpatialAudioTerm(nn.Module):
    """key_dim > 0 (`spatial_audio_keys`): also a projection to the pixel decoder's C channels,
    added to the multi-scale maps the frame decoder's queries attend to, so that a query's
    content (and from it its mask embedding) can carry the bands sounding where its object is."""

    def __init__(self, bands: int, bins: int, mask_dim: int, key_dim: int = 0) -> None:
        super().__init__()
        self.bands, self.bins = bands, bins
        self.frame_proj = nn.Linear(bands, mask_dim)
        self.video_proj = nn.Linear(bands, mask_dim)
        self.key_proj = nn.Linear(bands, key_dim) if key_dim > 0 else None
        for proj in (self.frame_proj, self.video_proj, self.key_proj):
            if proj is not None:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    @property
    def dim(self) -> int:
        """Size of the flattened map at the end of each frame's audio vector."""
        return self.bands * self.bins

    def columns(self, spatial: Tensor, widths: Sequence[int], grid_width: int, stride: int = 4) -> Tensor:
        """spatial (N, B*P) flattened maps; widths (N,) the pictures' unpadded widths in input
        pixels; the grid's columns are `stride` input pixels wide -> (N, B, Wm), the map at
        each mask-grid column centre (0 over the padding)."""
        n = spatial.shape[0]
        maps = spatial.reshape(n, self.bands, self.bins)
        width = torch.as_tensor(widths, dtype=maps.dtype, device=maps.device).view(n, 1)
        centre = (torch.arange(grid_width, device=maps.device, dtype=maps.dtype) + 0.5) * stride
        u = centre.view(1, -1) / width  # (N, Wm) position across the picture, 0..1 inside it
        source = (u * self.bins - 0.5).clamp(0, self.bins - 1)
        lo = source.floor().long()
        hi = (lo + 1).clamp(max=self.bins - 1)
        w_hi = (source - lo).unsqueeze(1)  # (N, 1, Wm)
        cols = _take(maps, lo) * (1 - w_hi) + _take(maps, hi) * w_hi
        return cols * (u <= 1).unsqueeze(1).to(cols.dtype)

    def forward(self, cols: Tensor, which: str) -> Tensor:
        """cols (N, B, W) from `columns` -> (N, C, 1, W), the term added to the frame decoder's
        ("frame") or the video module's ("video") mask features, or to an attended map ("key")."""
        proj = {"frame": self.frame_proj, "video": self.video_proj, "key": self.key_proj}[which]
        if proj is None:
            raise ValueError("this spatial-audio term has no key projection (spatial_audio_keys)")
        return proj(cols.transpose(1, 2)).transpose(1, 2).unsqueeze(2)


def _take(maps: Tensor, index: Tensor) -> Tensor:
    """maps (N, B, P), index (N, Wm) of position bins -> (N, B, Wm)."""
    return maps.gather(2, index.unsqueeze(1).expand(-1, maps.shape[1], -1))
