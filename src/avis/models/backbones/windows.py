"""Window bookkeeping of the Swin backbone: relative positions, shift masks, partitions.

Letters: B batch, H x W token grid, C channels, w window side, s shift, N = w * w tokens
per window, nW windows per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SHIFT_MASK_VALUE = -100.0  # the official value added to attention across shift regions


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) int64: index into the (2w-1)^2 bias table for each (query, key) pair."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)  # (2, N): row, column
    relative = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # (2, N, N)
    return relative[0] * (2 * window_size - 1) + relative[1]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of w -> (B, nW, N, C), windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window_size * window_size, c)


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device | None = None
) -> torch.Tensor:
    """(nW, N, N) additive mask of shifted-window attention on a padded (H, W) grid.

    After the cyclic shift, each axis has three regions: ``[0, H - w)``, ``[H - w, H - s)``
    and ``[H - s, H)``; tokens of different (row region, column region) pairs get
    ``SHIFT_MASK_VALUE``, others 0 (the official construction, computed without loops).
    """
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    row_region = (rows >= height - window_size).long() + (rows >= height - shift_size).long()
    col_region = (cols >= width - window_size).long() + (cols >= width - shift_size).long()
    regions = (row_region[:, None] * 3 + col_region[None, :]).float()  # (H, W)
    regions = window_partition(regions[None, :, :, None], window_size)[0, :, :, 0]  # (nW, N)
    different = regions[:, None, :] != regions[:, :, None]  # (nW, N, N)
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)


@dataclass(frozen=True)
class WindowLayout:
    """How a (B, H, W, C) map is cut into windows, as one gather and one scatter.

    ``gather`` (nW * N,) picks, for each window token after zero padding to multiples of
    the window and the cyclic shift by -s, its source row in the flattened map (index
    H * W = an appended zero row for padding). ``scatter`` (H * W,) is the inverse for
    the unpadded positions (undoing the shift and cropping). ``mask`` (nW, N, N) is the
    shift mask, None without shift.
    """

    gather: torch.Tensor
    scatter: torch.Tensor
    mask: torch.Tensor | None
    num_windows: int
    padded: bool


def window_layout(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device | None = None
) -> WindowLayout:
    """Index tensors equivalent to pad -> roll(-s) -> partition and back (no loops)."""
    w = window_size
    padded_h, padded_w = height + (-height) % w, width + (-width) % w
    # padded (rolled) coordinates of window tokens, ordered (window row, window col, r, c)
    rows = ((torch.arange(padded_h, device=device) + shift_size) % padded_h).view(-1, w)
    cols = ((torch.arange(padded_w, device=device) + shift_size) % padded_w).view(-1, w)
    src_rows, src_cols = rows[:, None, :, None], cols[None, :, None, :]
    inside = (src_rows < height) & (src_cols < width)
    gather = torch.where(inside, src_rows * width + src_cols, height * width).reshape(-1)
    # window-token position of every original (row, col)
    win_rows = (torch.arange(height, device=device) - shift_size) % padded_h
    win_cols = (torch.arange(width, device=device) - shift_size) % padded_w
    window_index = (win_rows // w)[:, None] * (padded_w // w) + (win_cols // w)[None, :]
    inner_index = (win_rows % w)[:, None] * w + (win_cols % w)[None, :]
    scatter = (window_index * (w * w) + inner_index).reshape(-1)
    mask = (
        shifted_window_mask(padded_h, padded_w, w, shift_size, device) if shift_size > 0 else None
    )
    return WindowLayout(
        gather=gather, scatter=scatter, mask=mask,
        num_windows=(padded_h // w) * (padded_w // w),
        padded=padded_h != height or padded_w != width,
    )
