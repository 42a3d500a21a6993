"""Point sampling on mask logits (PointRend style), in plain PyTorch.

Letters: M masks, C channels, P points, S = oversampled candidate points, H x W a mask grid.
Point coordinates are (x, y) in [0, 1] x [0, 1]; 0 and 1 are the outer edges of the grid,
which is the `grid_sample(..., align_corners=False)` convention. Because coordinates are
normalised, the same points address a stride-4 prediction and a full-size target alike.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(grid_values: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values at points, zero outside the grid.

    grid_values (M, C, H, W) float, coords (M, P, 2) in [0, 1] -> (M, C, P).
    """
    grid = 2.0 * coords.to(grid_values.dtype) - 1.0  # (M, P, 2) in [-1, 1]
    sampled = F.grid_sample(
        grid_values, grid.unsqueeze(2), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (M, C, P, 1)
    return sampled.squeeze(3)


def grid_centre_coords(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """The centres of every cell of an H x W grid, row-major: (H*W, 2) as (x, y) in [0, 1]."""
    return _grid_centre_coords(height, width, str(device))


@lru_cache(maxsize=16)
def _grid_centre_coords(height: int, width: int, device: str) -> Tensor:
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)


def uncertainty(logits: Tensor) -> Tensor:
    """Higher for logits closer to the decision boundary (0): -|logit|."""
    return -logits.abs()


@torch.no_grad()
def importance_sampled_coords(
    logits: Tensor, num_points: int, oversample_ratio: float, importance_ratio: float
) -> Tensor:
    """Points biased towards uncertain regions of each mask (Mask2Former's training points).

    Draw S = num_points * oversample_ratio uniform points per mask, keep the
    importance_ratio * num_points most uncertain ones and fill up with fresh uniform points.
    logits (M, 1, H, W) -> coords (M, num_points, 2). Uses the global torch RNG.
    """
    num_masks = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain
    candidates = torch.rand(num_masks, num_candidates, 2, device=logits.device)  # (M, S, 2)
    scores = uncertainty(point_sample(logits.float(), candidates))[:, 0]  # (M, S)
    top = scores.topk(num_uncertain, dim=1).indices  # (M, U)
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))  # (M, U, 2)
    if num_random > 0:
        fresh = torch.rand(num_masks, num_random, 2, device=logits.device)
        chosen = torch.cat([chosen, fresh], dim=1)
    return chosen
