"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

Letters: N batch, Lq queries, S = sum of H_l * W_l value tokens, C channels, h heads,
d = C / h, nL levels, P sampling points per (head, level), H_l x W_l size of level l.

Sampling is bilinear ``grid_sample`` with zero padding and ``align_corners=False``: a
location (x, y) in [0, 1] reads pixel coordinates (x * W_l - 0.5, y * H_l - 0.5), which is
what the official CUDA kernel and its PyTorch fallback compute. One ``grid_sample`` per level
covers all heads, queries and points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GRID_INIT_SCALE_BY_POINT = True  # point k of a head starts at offset (k + 1) * direction


def ms_deform_attn_sample(
    value: Tensor,  # (N, S, h, d)
    spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l), level order of `value`
    sampling_locations: Tensor,  # (N, Lq, h, nL, P, 2), (x, y) normalised to [0, 1]
    attention_weights: Tensor,  # (N, Lq, h, nL, P), softmax-normalised over (nL, P)
) -> Tensor:  # (N, Lq, h * d)
    n, s, heads, d = value.shape
    lq = sampling_locations.shape[1]
    points = sampling_locations.shape[4]
    sizes = [hh * ww for hh, ww in spatial_shapes]
    if sum(sizes) != s:
        raise ValueError(f"spatial_shapes {list(spatial_shapes)} cover {sum(sizes)} tokens, value has {s}")
    grids = 2 * sampling_locations - 1  # grid_sample coordinates in [-1, 1]
    # (N, Lq, h, nL, P) -> (N*h, nL, Lq, P)
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(n * heads, -1, lq, points)
    out = None
    for lvl, (value_l, (hh, ww)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes)):
        # (N, H*W, h, d) -> (N*h, d, H, W)
        value_l = value_l.permute(0, 2, 3, 1).reshape(n * heads, d, hh, ww)
        # (N, Lq, h, P, 2) -> (N*h, Lq, P, 2)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).reshape(n * heads, lq, points, 2)
        sampled = F.grid_sample(
            value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (N*h, d, Lq, P)
        term = torch.einsum("bdqp,bqp->bqd", sampled, weights[:, lvl])  # (N*h, Lq, d)
        out = term if out is None else out + term
    assert out is not None
    # (N*h, Lq, d) -> (N, Lq, h*d)
    return out.reshape(n, heads, lq, d).transpose(1, 2).reshape(n, lq, heads * d)


class MSDeformAttn(nn.Module):
    """Deformable attention module; parameter names match the official ``MSDeformAttn``."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on a ring of directions, uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)  # (h, 2)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        if GRID_INIT_SCALE_BY_POINT:
            grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,  # (N, Lq, C)
        reference_points: Tensor,  # (N, Lq, nL, 2), (x, y) in [0, 1]
        input_flatten: Tensor,  # (N, S, C)
        spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l)
        input_padding_mask: Tensor | None = None,  # (N, S) bool, True = padding
    ) -> Tensor:  # (N, Lq, C)
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        if len(spatial_shapes) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} levels, got {len(spatial_shapes)}")
        if reference_points.shape[-1] != 2:
            raise ValueError("reference_points must be (x, y) points; boxes are not supported")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, lq, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(n, lq, self.n_heads, -1).softmax(-1)
        weights = weights.view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level: divide by (W_l, H_l)
        normalizer = torch.tensor(
            [[ww, hh] for hh, ww in spatial_shapes], dtype=query.dtype, device=query.device
        )  # (nL, 2)
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        )
        out = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
