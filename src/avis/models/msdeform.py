"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

Letters: N batch, Lq queries, S = sum of H_l * W_l value tokens, C channels, h heads,
d = C / h, nL levels, P sampling points per (head, level), H_l x W_l size of level l.

Sampling is bilinear ``grid_sample`` with zero padding and ``align_corners=False``: a
location (x, y) in [0, 1] reads pixel coordinates (x * W_l - 0.5, y * H_l - 0.5), which is
what the official CUDA kernel and its PyTorch fallback compute. Three equivalent samplers,
chosen by device (`default_sampling_method`): on CPU one ``grid_sample`` per level over all
heads, queries and points (used under autograd) and an ``embedding_bag`` over explicit
bilinear corners of all levels at once (faster, used without autograd); on GPUs one
``grid_sample`` over a canvas holding every level (`sample_with_canvas`, with and without
autograd).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_shapes(value: Tensor, spatial_shapes: Sequence[tuple[int, int]]) -> list[int]:
    sizes = [hh * ww for hh, ww in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(
            f"spatial_shapes {list(spatial_shapes)} cover {sum(sizes)} tokens, value has {value.shape[1]}"
        )
    return sizes


def sample_with_grid_sample(
    value: Tensor,  # (N, S, h, d)
    spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l)
    sampling_locations: Tensor,  # (N, Lq, h, nL, P, 2)
    attention_weights: Tensor,  # (N, Lq, h, nL, P)
) -> Tensor:  # (N, Lq, h * d)
    """One ``grid_sample`` per level over all heads, queries and points (fast backward)."""
    n, _, heads, d = value.shape
    lq, points = sampling_locations.shape[1], sampling_locations.shape[4]
    sizes = _check_shapes(value, spatial_shapes)
    grids = 2 * sampling_locations - 1  # grid_sample coordinates in [-1, 1]
    # (N, Lq, h, nL, P) -> (N*h, nL, 1, Lq, P)
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(n * heads, -1, 1, lq, points)
    out = None
    for lvl, (value_l, (hh, ww)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes)):
        value_l = value_l.permute(0, 2, 3, 1).reshape(n * heads, d, hh, ww)  # (N*h, d, H, W)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).reshape(n * heads, lq, points, 2)
        sampled = F.grid_sample(
            value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (N*h, d, Lq, P)
        term = (sampled * weights[:, lvl]).sum(-1)  # (N*h, d, Lq)
        out = term if out is None else out + term
    assert out is not None
    # (N*h, d, Lq) -> (N, Lq, h*d)
    return out.view(n, heads * d, lq).transpose(1, 2)


def _softmax_short_rows(x: Tensor) -> Tensor:
    """Softmax over a short last dim (nL * P): the same formula as ``Tensor.softmax``,
    written out because the fused CPU kernel is several times slower on rows of ~12."""
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


BORDER_BEFORE, BORDER_AFTER = 1, 2  # zero rows around each level map in the gather table


def _bordered_table(
    value: Tensor, spatial_shapes: Sequence[tuple[int, int]], sizes: list[int]
) -> tuple[Tensor, list[int]]:
    """(N, S, h, d) -> value table (N * S' * h, d) whose level maps have a zero border, and
    the first token of each bordered level; S' = sum of (H_l + 3) * (W_l + 3)."""
    n, _, heads, d = value.shape
    border = (0, 0, BORDER_BEFORE, BORDER_AFTER, BORDER_BEFORE, BORDER_AFTER)  # (h*d, W, H)
    maps, starts, offset = [], [], 0
    for value_l, (hh, ww) in zip(value.split(sizes, dim=1), spatial_shapes):
        maps.append(F.pad(value_l.reshape(n, hh, ww, heads * d), border).flatten(1, 2))
        starts.append(offset)
        offset += maps[-1].shape[1]
    return torch.cat(maps, 1).reshape(-1, d), starts


@dataclass
class GatherTable:
    """The value table of `sample_with_gather`, built once and shared by query blocks.

    `table`: (N * S' * h, d), each level map with a zero border (S' = sum of (H_l + 3) *
    (W_l + 3)); `starts`: first bordered token of each level.
    """

    table: Tensor
    starts: list[int]
    num_images: int
    heads: int
    head_dim: int

    @classmethod
    def build(cls, value: Tensor, spatial_shapes: Sequence[tuple[int, int]]) -> GatherTable:
        """From values (N, S, h, d) in the level order of `spatial_shapes`."""
        n, _, heads, d = value.shape
        table, starts = _bordered_table(value, spatial_shapes, _check_shapes(value, spatial_shapes))
        return cls(table, starts, n, heads, d)

    @property
    def rows_per_image(self) -> int:  # S' * h
        return self.table.shape[0] // self.num_images

    def image(self, index: int) -> GatherTable:
        """The table of one image (a view): blocks of that image's queries read it."""
        rows = self.rows_per_image
        part = self.table[index * rows : (index + 1) * rows]
        return GatherTable(part, self.starts, 1, self.heads, self.head_dim)


def sample_with_gather(
    value: Tensor | GatherTable,  # (N, S, h, d), or its prepared GatherTable
    spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l)
    sampling_locations: Tensor,  # (N, Lq, h, nL, P, 2)
    attention_weights: Tensor,  # (N, Lq, h, nL, P)
) -> Tensor:  # (N, Lq, h * d)
    """Explicit bilinear corners, all levels at once, summed by one ``embedding_bag``.

    Each (image, query, head) is a bag of nL * P * 4 corner rows of the value table, weighted
    by attention weight x bilinear weight. Zero padding comes from a zero border around each
    level map: pixel coordinates are clamped to [-1, W_l] x [-1, H_l], where every corner
    outside the map lands on the border. About twice as fast as ``grid_sample`` in
    inference, but its backward is slow: used without autograd. Blocks of queries can share
    one `GatherTable` of the value.
    """
    gathered = value if isinstance(value, GatherTable) else GatherTable.build(value, spatial_shapes)
    # pixel coordinates (align_corners=False): x * W_l - 0.5, y * H_l - 0.5
    pixels = sampling_locations * level_sizes(spatial_shapes, sampling_locations) - 0.5
    return sample_pixels_with_gather(gathered, spatial_shapes, pixels, attention_weights)


def level_sizes(spatial_shapes: Sequence[tuple[int, int]], like: Tensor) -> Tensor:
    """(nL, 1, 2) = (W_l, H_l) per level, broadcast over (..., nL, P, 2) coordinates."""
    sizes = [[ww, hh] for hh, ww in spatial_shapes]
    return torch.tensor(sizes, dtype=like.dtype, device=like.device).view(-1, 1, 2)


def sample_pixels_with_gather(
    gathered: GatherTable,
    spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l)
    pixels: Tensor,  # (N, Lq, h, nL, P, 2) pixel coordinates (x, y) of each level (consumed)
    attention_weights: Tensor,  # (N, Lq, h, nL, P)
) -> Tensor:  # (N, Lq, h * d)
    """`sample_with_gather` from pixel coordinates; ``pixels`` is overwritten."""
    table, starts, heads = gathered.table, gathered.starts, gathered.heads
    n, d = gathered.num_images, gathered.head_dim
    lq = pixels.shape[1]
    device = table.device
    index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.long
    sizes = level_sizes(spatial_shapes, pixels)  # (nL, 1, 2) = (W, H)
    row_stride = (sizes[..., 0] + BORDER_BEFORE + BORDER_AFTER).to(index_dtype) * heads  # (nL, 1)
    # table row of the bordered pixel (0, 0) of level l for image b, head m
    base = (
        torch.arange(n, device=device, dtype=index_dtype).view(n, 1, 1, 1, 1)
        * gathered.rows_per_image
        + torch.arange(heads, device=device, dtype=index_dtype).view(1, 1, heads, 1, 1)
        + torch.tensor(starts, device=device, dtype=index_dtype).view(-1, 1) * heads
    )  # (N, 1, h, nL, 1)
    # clamped so that all corners have a table row (x and y in one pass each)
    pixels = torch.nan_to_num_(pixels, nan=-1.0)
    pixels = torch.minimum(pixels, sizes, out=pixels).clamp_(min=-1.0)
    corner = pixels.floor()  # (N, Lq, h, nL, P, 2) top-left corner
    frac = pixels.sub_(corner)  # in place: the fractional parts
    corner_index = (corner.to(index_dtype) + BORDER_BEFORE).unbind(-1)  # x0, y0
    fx, fy = frac.unbind(-1)
    top_left = base + corner_index[1] * row_stride
    top_left += corner_index[0] * heads
    # (table-row offset, weight) of the two corner rows, then of the two corner columns
    steps: tuple[tuple[tuple[int | Tensor, Tensor], ...], ...] = (
        ((0, 1 - fy), (row_stride, fy)),
        ((0, 1 - fx), (heads, fx)),
    )
    if compiling():  # same values, as a graph Inductor fuses into one loop
        rows, weights = [], []
        for dy, wy in steps[0]:
            y_weights = attention_weights * wy
            for dx, wx in steps[1]:
                rows.append(top_left + (dy + dx))
                weights.append(y_weights * wx)
        bag_rows, bag_weights = torch.stack(rows, -1), torch.stack(weights, -1)
    else:
        corners = (*attention_weights.shape, 4)  # (N, Lq, h, nL, P, 4), filled in place
        bag_rows = torch.empty(corners, dtype=index_dtype, device=device)
        bag_weights = torch.empty(corners, dtype=attention_weights.dtype, device=device)
        for iy, (dy, wy) in enumerate(steps[0]):
            y_weights = attention_weights * wy
            for ix, (dx, wx) in enumerate(steps[1]):
                torch.add(top_left, dy + dx, out=bag_rows[..., 2 * iy + ix])
                torch.mul(y_weights, wx, out=bag_weights[..., 2 * iy + ix])
    out = _weighted_bags(
        bag_rows.view(n * lq * heads, -1),  # (N*Lq*h, nL*P*4)
        table,
        bag_weights.view(n * lq * heads, -1),
    )  # (N*Lq*h, d)
    return out.view(n, lq, heads * d)


def compiling() -> bool:
    """True while ``torch.compile`` traces this code (never in eager runs)."""
    check = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(check()) if check is not None else False


@torch.compiler.disable
def _weighted_bags(rows: Tensor, table: Tensor, weights: Tensor) -> Tensor:
    """``embedding_bag`` sum; kept out of ``torch.compile`` graphs, whose decomposition of it
    materialises every gathered row (several times slower on CPU)."""
    # under autocast the table may be bf16 while the weights are float32: one dtype for both
    return F.embedding_bag(rows, table, per_sample_weights=weights.to(table.dtype), mode="sum")


CANVAS_BYTES = 1 << 28  # `sample_with_canvas`: images per grid_sample call so that its samples fit


def _canvas(
    value: Tensor, spatial_shapes: Sequence[tuple[int, int]], sizes: list[int]
) -> tuple[Tensor, list[int]]:
    """(N, S, h, d) -> canvas (N*h, d, Hc, Wc): the level maps side by side, each with a zero
    border (BORDER_BEFORE / BORDER_AFTER columns, rows below padded with zeros), and the
    canvas column of each level's first pixel."""
    n, _, heads, d = value.shape
    height = max(hh for hh, _ in spatial_shapes) + BORDER_BEFORE + BORDER_AFTER
    maps, columns, column = [], [], 0
    for value_l, (hh, ww) in zip(value.split(sizes, dim=1), spatial_shapes):
        value_l = value_l.permute(0, 2, 3, 1).reshape(n * heads, d, hh, ww)
        border = (BORDER_BEFORE, BORDER_AFTER, BORDER_BEFORE, height - hh - BORDER_BEFORE)
        maps.append(F.pad(value_l, border))  # (N*h, d, Hc, W_l + 3)
        columns.append(column + BORDER_BEFORE)
        column += maps[-1].shape[-1]
    return torch.cat(maps, -1), columns


def sample_with_canvas(
    value: Tensor,  # (N, S, h, d)
    spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l)
    sampling_locations: Tensor,  # (N, Lq, h, nL, P, 2)
    attention_weights: Tensor,  # (N, Lq, h, nL, P)
) -> Tensor:  # (N, Lq, h * d)
    """One ``grid_sample`` over all levels, heads and points (the GPU path).

    The level maps sit side by side on one canvas with a zero border around each; pixel
    coordinates are clamped to [-1, W_l] x [-1, H_l] as in `sample_with_gather`, so every
    bilinear corner outside a level reads that level's zero border, never a neighbour:
    zero padding per level, as the per-level ``grid_sample``. Differentiable (training) and
    a few large kernels instead of nL small ones and a CPU-shaped gather. Images are taken
    in groups whose samples stay under `CANVAS_BYTES`.
    """
    n, _, heads, d = value.shape
    lq, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    sizes = _check_shapes(value, spatial_shapes)
    canvas, columns = _canvas(value, spatial_shapes, sizes)  # (N*h, d, Hc, Wc)
    level_wh = level_sizes(spatial_shapes, sampling_locations)  # (nL, 1, 2) = (W_l, H_l)
    pixels = torch.nan_to_num(sampling_locations * level_wh - 0.5, nan=-1.0)
    pixels = torch.minimum(pixels, level_wh).clamp(min=-1.0)
    origin = torch.tensor(
        [[c, BORDER_BEFORE] for c in columns], dtype=pixels.dtype, device=pixels.device
    ).view(-1, 1, 2)  # canvas pixel of each level's (0, 0)
    canvas_wh = torch.tensor(
        [canvas.shape[-1], canvas.shape[-2]], dtype=pixels.dtype, device=pixels.device
    )
    grid = (pixels + origin + 0.5) / canvas_wh * 2 - 1  # align_corners=False coordinates
    # (N, Lq, h, nL, P, 2) -> (N*h, Lq, nL*P, 2); weights -> (N*h, 1, Lq, nL*P)
    grid = grid.permute(0, 2, 1, 3, 4, 5).reshape(n * heads, lq, levels * points, 2)
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(n * heads, 1, lq, levels * points)
    # coordinates never in bf16/fp16 (a canvas 150 px wide would be off by ~0.5 px): the
    # sampling runs in the wider of the two dtypes (float32 under autocast)
    dtype = torch.promote_types(canvas.dtype, grid.dtype)
    per_image = heads * d * lq * levels * points * torch.finfo(dtype).bits // 8
    group = max(1, CANVAS_BYTES // max(per_image, 1)) * heads  # rows of N*h per call
    outs = []
    for first in range(0, n * heads, group):
        rows = slice(first, first + group)
        sampled = F.grid_sample(
            canvas[rows].to(dtype), grid[rows].to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (r, d, Lq, nL*P)
        outs.append((sampled * weights[rows].to(dtype)).sum(-1))  # (r, d, Lq)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.view(n, heads * d, lq).transpose(1, 2)


SAMPLING_METHODS = ("auto", "gather", "grid_sample", "canvas")


def default_sampling_method(device: torch.device, needs_grad: bool) -> str:
    """CPU: the gather without autograd, per-level grid_sample with it; other devices
    (CUDA): the canvas grid_sample (one kernel over all levels and heads)."""
    if device.type != "cpu":
        return "canvas"
    return "grid_sample" if needs_grad else "gather"


def ms_deform_attn_sample(
    value: Tensor,  # (N, S, h, d)
    spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l), level order of `value`
    sampling_locations: Tensor,  # (N, Lq, h, nL, P, 2), (x, y) normalised to [0, 1]
    attention_weights: Tensor,  # (N, Lq, h, nL, P), softmax-normalised over (nL, P)
    method: str = "auto",
) -> Tensor:  # (N, Lq, h * d)
    """Bilinear multi-scale sampling; ``method`` "auto" = `default_sampling_method`."""
    if method == "auto":
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (value, sampling_locations, attention_weights)
        )
        method = default_sampling_method(value.device, needs_grad)
    if method == "canvas":
        return sample_with_canvas(value, spatial_shapes, sampling_locations, attention_weights)
    if method == "grid_sample":
        return sample_with_grid_sample(value, spatial_shapes, sampling_locations, attention_weights)
    if method == "gather":
        return sample_with_gather(value, spatial_shapes, sampling_locations, attention_weights)
    raise ValueError(f"method must be one of {SAMPLING_METHODS}, got {method!r}")


class MSDeformAttn(nn.Module):
    """Deformable attention module; parameter names match the official ``MSDeformAttn``."""

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4
    ) -> None:
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
        # point k of a head starts at (k + 1) * its direction
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
        value = self.project_value(input_flatten, input_padding_mask)
        return self.attend(query, reference_points, value, spatial_shapes)

    def project_value(
        self,
        input_flatten: Tensor,  # (N, S, C)
        input_padding_mask: Tensor | None = None,  # (N, S) bool, True = padding
    ) -> Tensor:  # (N, S, h, d)
        n, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        return value.view(n, s, self.n_heads, self.d_model // self.n_heads)

    def attend(
        self,
        query: Tensor,  # (N, Lq, C)
        reference_points: Tensor,  # (N, Lq, nL, 2), (x, y) in [0, 1]
        value: Tensor | GatherTable,  # (N, S, h, d) from `project_value`, or its GatherTable
        spatial_shapes: Sequence[tuple[int, int]],  # nL x (H_l, W_l)
    ) -> Tensor:  # (N, Lq, C)
        """The queries' half of the attention: any block of queries can read one `value`."""
        n, lq, _ = query.shape
        if len(spatial_shapes) != self.n_levels:
            raise ValueError(f"expected {self.n_levels} levels, got {len(spatial_shapes)}")
        if reference_points.shape[-1] != 2:
            raise ValueError("reference_points must be (x, y) points; boxes are not supported")
        offsets = self.sampling_offsets(query).view(
            n, lq, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = _softmax_short_rows(self.attention_weights(query).view(n, lq, self.n_heads, -1))
        weights = weights.view(n, lq, self.n_heads, self.n_levels, self.n_points)
        sizes = level_sizes(spatial_shapes, query)  # (nL, 1, 2) = (W_l, H_l)
        if isinstance(value, GatherTable):
            # offsets are in pixels of each level: the pixel coordinates of the samples are
            # ref * size - 0.5 + offset, which equals (ref + offset / size) * size - 0.5 up to
            # float rounding (two passes over the samples instead of five)
            ref_pixels = reference_points * sizes.view(-1, 2) - 0.5  # (N, Lq, nL, 2)
            pixels = offsets + ref_pixels[:, :, None, :, None, :]
            out = sample_pixels_with_gather(value, spatial_shapes, pixels, weights)
        else:  # offsets are in pixels of each level: divide by (W_l, H_l)
            locations = reference_points[:, :, None, :, None, :] + offsets / sizes
            out = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
