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

With ``cue_dim`` (`spatial_audio_cues`) the term also tells each frame query which bands
sound under its own mask (`token_cues`), so that the video module can tell two look-alike
tokens apart by their sound in every frame, with no pooling over time.

Letters: N frames, B bands, P position bins, Cm mask channels, Hm x Wm mask grid, L layers of
frame queries, fQ frame queries, C frame-query size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avis.models.layers import MLP

CUE_LAYERS = 2  # MLP of a token's band profile (token_cues)


class SpatialAudioTerm(nn.Module):
    """key_dim > 0 (`spatial_audio_keys`): also a projection to the pixel decoder's C channels,
    added to the multi-scale maps the frame decoder's queries attend to, so that a query's
    content (and from it its mask embedding) can carry the bands sounding where its object is.

    cue_dim > 0 (`spatial_audio_cues`): an MLP from a frame query's band profile under its mask
    to cue_dim (the frame-query size), added to the query the video module reads (`token_cues`).

    early_dim > 0 (`spatial_audio_early`): a projection to the pixel decoder's C channels, added
    to its encoder inputs (after their input projections, before the deformable attention), so
    that the encoder can carry a column's bands onto the object standing in it: the map is the
    same along a column, an object's features need not be."""

    def __init__(
        self, bands: int, bins: int, mask_dim: int, key_dim: int = 0, cue_dim: int = 0,
        early_dim: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.bands, self.bins = bands, bins
        self.frame_proj = nn.Linear(bands, mask_dim)
        self.video_proj = nn.Linear(bands, mask_dim)
        self.key_proj = nn.Linear(bands, key_dim) if key_dim > 0 else None
        self.early_proj = nn.Linear(bands, early_dim) if early_dim > 0 else None
        self.cue_embed = MLP(bands, cue_dim, cue_dim, CUE_LAYERS) if cue_dim > 0 else None
        last = None if self.cue_embed is None else self.cue_embed.layers[-1]
        for proj in (self.frame_proj, self.video_proj, self.key_proj, self.early_proj, last):
            if isinstance(proj, nn.Linear):
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
        ("frame") or the video module's ("video") mask features, to an attended map ("key") or
        to an input of the pixel decoder's encoder ("early")."""
        projs = {"frame": self.frame_proj, "video": self.video_proj, "key": self.key_proj,
                 "early": self.early_proj}  # fmt: skip
        proj = projs[which]
        if proj is None:
            option = {"key": "spatial_audio_keys", "early": "spatial_audio_early"}[which]
            raise ValueError(f"this spatial-audio term has no {which} projection ({option})")
        return proj(cols.transpose(1, 2)).transpose(1, 2).unsqueeze(2)

    def token_cues(self, cols: Tensor, mask_logits: Tensor) -> Tensor:
        """cols (N, B, Wm) from `columns` on the masks' grid; mask_logits (L, N, fQ, Hm, Wm) of
        the frame queries' own predictions (not differentiated) -> (L, N, fQ, C): the cue
        embedding of each query's band profile, the map's columns averaged with the weight of
        its mask in each column. Two look-alikes at different places that sound at different
        pitches get different profiles in every frame, wherever they move."""
        if self.cue_embed is None:
            raise ValueError("this spatial-audio term has no cue embedding (spatial_audio_cues)")
        weight = mask_logits.detach().float().sigmoid().sum(-2)  # (L, N, fQ, Wm) mask mass per column
        profile = torch.einsum("lnqw,nbw->lnqb", weight, cols.float())
        profile = profile / (weight.sum(-1, keepdim=True) + 1e-6)  # (L, N, fQ, B)
        first = self.cue_embed.layers[0]
        assert isinstance(first, nn.Linear)
        return self.cue_embed(profile.to(first.weight.dtype))


def _take(maps: Tensor, index: Tensor) -> Tensor:
    """maps (N, B, P), index (N, Wm) of position bins -> (N, B, Wm)."""
    return maps.gather(2, index.unsqueeze(1).expand(-1, maps.shape[1], -1))
