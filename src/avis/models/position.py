"""2-D sine position encoding of DETR / Mask2Former (``PositionEmbeddingSine``, no padding mask).

Letters: N batch, C = 2 * F channels (F per axis), H x W map size.

For pixel (i, j) of an H x W map: y = (i + 1) / H * scale, x = (j + 1) / W * scale
(``normalize=True``), frequencies ``temperature ** (2 * (k // 2) / F)``, even channels sin,
odd channels cos (interleaved), the y half first, then the x half.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DEFAULT_TEMPERATURE = 10000.0
DEFAULT_SCALE = 2 * math.pi
NORMALIZE_EPS = 1e-6  # as in the reference code: cumsum / (last + eps)


def sine_position_encoding(
    height: int,
    width: int,
    num_pos_feats: int,
    temperature: float = DEFAULT_TEMPERATURE,
    scale: float = DEFAULT_SCALE,
    device: torch.device | None = None,
) -> Tensor:  # (2F, H, W) float32
    """The encoding of one H x W map (identical for every batch element)."""
    y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y_embed = y_embed / (y_embed[-1:] + NORMALIZE_EPS) * scale  # (H,)
    x_embed = x_embed / (x_embed[-1:] + NORMALIZE_EPS) * scale  # (W,)
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)  # (F,)
    pos_y = y_embed[:, None] / dim_t  # (H, F)
    pos_x = x_embed[:, None] / dim_t  # (W, F)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos_y = pos_y.t()[:, :, None].expand(num_pos_feats, height, width)  # (F, H, W)
    pos_x = pos_x.t()[:, None, :].expand(num_pos_feats, height, width)  # (F, H, W)
    return torch.cat((pos_y, pos_x), dim=0)


def fourier_coordinates(
    height: int, width: int, num_freqs: int, device: torch.device | None = None
) -> Tensor:  # (2 + 4 * num_freqs, H, W) float32
    """Pixel-centre coordinates of an H x W map and their Fourier features (avis option).

    Channels: x and y in [-1, 1], then sin and cos of pi * 2**k * x and of pi * 2**k * y for
    k = 0 .. num_freqs - 1 (wavelengths from the whole map down to 2**(1 - num_freqs) of it).
    Unlike the DETR encoding above, whose frequencies are mostly far below one period per
    map, these resolve positions at the scale of an object.
    """
    y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height * 2 - 1  # (H,)
    x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width * 2 - 1  # (W,)
    freqs = math.pi * 2.0 ** torch.arange(num_freqs, dtype=torch.float32, device=device)  # (K,)
    ys = [y] + [f(y * w) for w in freqs for f in (torch.sin, torch.cos)]  # 1 + 2K of (H,)
    xs = [x] + [f(x * w) for w in freqs for f in (torch.sin, torch.cos)]  # 1 + 2K of (W,)
    y_maps = torch.stack(ys)[:, :, None].expand(-1, height, width)  # (1 + 2K, H, W)
    x_maps = torch.stack(xs)[:, None, :].expand(-1, height, width)  # (1 + 2K, H, W)
    return torch.cat((x_maps, y_maps), dim=0)


def query_anchors(num_queries: int, device: torch.device | None = None) -> Tensor:
    """(Q, 2) fixed (x, y) anchor points in [0, 1]: cell centres of a grid about twice as wide
    as high (10 queries: 5 x 2, 20: 7 x 3), filled row by row.

    Shared by the model (``anchor_queries``: each query's position embedding is its anchor's)
    and the matcher (``anchor_cost``: each query is preferably matched to the target nearest
    its anchor), so that both mean the same place by query q.
    """
    rows = max(1, round((num_queries / 2) ** 0.5))
    cols = -(-num_queries // rows)
    idx = torch.arange(num_queries, device=device)
    x = (idx % cols + 0.5) / cols
    y = (torch.div(idx, cols, rounding_mode="floor") + 0.5) / rows
    return torch.stack([x, y], 1)


def sine_point_encoding(
    points: Tensor,
    num_pos_feats: int,
    temperature: float = DEFAULT_TEMPERATURE,
    scale: float = DEFAULT_SCALE,
) -> Tensor:  # (..., 2F)
    """The encoding of `sine_position_encoding` at points (..., 2) = (x, y) in [0, 1] of the
    map: the value a pixel at that place gets (y half first, then x), so that a query placed
    at a point and the pixels there have the same position code."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=points.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)  # (F,)
    halves = []
    for axis in (1, 0):  # y, then x
        angle = points[..., axis : axis + 1].float() * scale / dim_t  # (..., F)
        halves.append(torch.stack((angle[..., 0::2].sin(), angle[..., 1::2].cos()), -1).flatten(-2))
    return torch.cat(halves, -1)


class PositionEmbeddingSine(nn.Module):
    """Parameter-free module: forward(x (N, *, H, W)) -> (N, 2F, H, W) in x's dtype."""

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = DEFAULT_TEMPERATURE,
        scale: float = DEFAULT_SCALE,
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        pos = sine_position_encoding(
            h, w, self.num_pos_feats, self.temperature, self.scale, device=x.device
        )
        return pos.to(x.dtype).unsqueeze(0).expand(n, -1, -1, -1)
