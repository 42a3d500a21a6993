"""Mask2Former's ``MSDeformAttnPixelDecoder``: deformable-attention encoder + one FPN step.

Letters: N images (frames), C conv_dim, M mask_dim, H x W padded input size,
S = sum of the encoder levels' h_l * w_l tokens.

Input: backbone maps ordered by stride ascending, e.g. [res2, res3, res4, res5] at strides
4/8/16/32. The last ``num_encoder_levels`` maps go through the deformable encoder; the ones
before them are merged top-down FPN-style (``adapter_k`` lateral conv, ``layer_k`` output conv),
k = 1 for the map just above the encoder levels. Parameter names match the official module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avis.models.msdeform import GatherTable, MSDeformAttn, compiling
from avis.models.position import PositionEmbeddingSine, fourier_coordinates

DEFAULT_GN_GROUPS = 32


@dataclass
class PixelDecoderOutput:
    mask_features: Tensor  # (N, M, H/4, W/4) = mask_features 1x1 conv of the finest map
    stride4_features: Tensor  # (N, C, H/4, W/4) finest FPN map, before the 1x1 mask conv
    multi_scale_features: list[Tensor]  # encoder outputs, coarse to fine: [(N, C, H/32, W/32), ...]


class ConvNorm(nn.Conv2d):
    """detectron2-style ``Conv2d`` with a ``norm`` child (keys ``weight``, ``norm.*``) and ReLU option."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, num_groups: int, relu: bool
    ) -> None:
        super().__init__(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(num_groups, out_ch)
        self.relu = relu
        nn.init.kaiming_uniform_(self.weight, a=1)  # detectron2 c2_xavier_fill

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(super().forward(x))
        return x.relu_() if self.relu else x  # in place (GroupNorm's backward does not read its output)


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN (ReLU)."""

    def __init__(
        self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int, dropout: float
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    # Without autograd the layer runs over blocks of at most `block_rows` queries of one
    # image: the value table is built once per layer, and the temporaries of the sampling and
    # of the FFN are a block's size (a few MB, recycled by the allocator) instead of fresh
    # (N, S, ...) tensors (100+ MB each, page-faulted on every call). Same formulas per row.
    block_rows: int = 4096

    def forward(
        self,
        src: Tensor,  # (N, S, C)
        pos: Tensor,  # (N, S, C)
        reference_points: Tensor,  # (N, S, nL, 2)
        spatial_shapes: Sequence[tuple[int, int]],
        out: Tensor | None = None,  # (N, S, C) buffer for the output of the block path
    ) -> Tensor:  # (N, S, C)
        """The layer's output; the block path (no autograd) writes it into ``out`` when
        given, else into a new tensor. ``out`` may be ``src`` itself: the value table is
        built before the first block, and each block reads only its own rows of ``src``
        before its output rows are written."""
        value = self.self_attn.project_value(src)  # (N, S, h, d)
        n, s, _ = src.shape
        if src.device.type != "cpu" or not self.uses_blocks(n * s):  # blocks: a CPU design
            return self._block(src, pos, reference_points, value, spatial_shapes)
        table = GatherTable.build(value, spatial_shapes)
        num_blocks = -(-s // self.block_rows)
        size = -(-s // num_blocks)  # equal blocks
        if out is None:
            out = torch.empty_like(src)
        elif out.shape != src.shape:
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(src.shape)}")
        # the FFN's hidden rows (the block's largest temporary, 10 MB at 384x640) go into one
        # buffer shared by the blocks instead of a fresh tensor per block
        hidden = src.new_empty(size, self.linear1.out_features)
        for i in range(n):
            image_table = table.image(i)
            for start in range(0, s, size):
                rows = slice(start, start + size)
                out[i : i + 1, rows] = self._block(
                    src[i : i + 1, rows],
                    pos[i : i + 1, rows],
                    reference_points[i : i + 1, rows],
                    image_table,
                    spatial_shapes,
                    hidden,
                )
        return out

    def uses_blocks(self, rows: int) -> bool:
        """Whether a call over ``rows`` = N * S queries takes the block path."""
        return not (
            torch.is_grad_enabled() or compiling() or self.block_rows <= 0 or rows <= self.block_rows
        )

    def _block(
        self,
        src: Tensor,  # (N, Lq, C) queries
        pos: Tensor,  # (N, Lq, C)
        reference_points: Tensor,  # (N, Lq, nL, 2)
        value: Tensor | GatherTable,  # (N, S, h, d) values of all tokens
        spatial_shapes: Sequence[tuple[int, int]],
        hidden: Tensor | None = None,  # (>= N*Lq, ffn) buffer for the FFN's hidden rows
    ) -> Tensor:  # (N, Lq, C)
        # residual adds and the ReLU work in place on the fresh outputs of the attention and
        # linear layers (whose backward does not read them): no new (N, S, C) / (N, S, ffn)
        # tensors per layer; same values (addition commutes exactly)
        attn = self.self_attn.attend(src + pos, reference_points, value, spatial_shapes)
        src = self.norm1(self.dropout(attn).add_(src))
        if hidden is None or torch.is_autocast_enabled(src.device.type):  # out= skips autocast
            inner = self.linear1(src)
        else:  # the same product as linear1 (bias + src @ W^T), written into the buffer
            rows = src.shape[0] * src.shape[1]
            inner = torch.addmm(
                self.linear1.bias, src.reshape(rows, -1), self.linear1.weight.t(), out=hidden[:rows]
            ).view(*src.shape[:2], -1)
        ffn = self.linear2(self.dropout(inner.relu_()))
        return self.norm2(self.dropout(ffn).add_(src))


class MSDeformAttnEncoder(nn.Module):
    """Keys ``encoder.layers.{i}.*``."""

    def __init__(self, layers: list[MSDeformAttnEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class MSDeformAttnTransformer(nn.Module):
    """Encoder-only deformable transformer (keys ``level_embed``, ``encoder.layers.{i}.*``)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        num_layers: int,
        ffn_dim: int,
        dropout: float,
        n_levels: int,
        n_points: int,
    ) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.encoder = MSDeformAttnEncoder(
            [
                MSDeformAttnEncoderLayer(d_model, ffn_dim, n_levels, n_heads, n_points, dropout)
                for _ in range(num_layers)
            ]
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def reference_points(
        spatial_shapes: Sequence[tuple[int, int]], device: torch.device
    ) -> Tensor:  # (S, 2) pixel centres (x, y) normalised by each level's size
        points = []
        for hh, ww in spatial_shapes:
            ys = torch.linspace(0.5, hh - 0.5, hh, dtype=torch.float32, device=device) / hh
            xs = torch.linspace(0.5, ww - 0.5, ww, dtype=torch.float32, device=device) / ww
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
        return torch.cat(points, 0)

    def forward(self, srcs: list[Tensor], pos_embeds: list[Tensor]) -> list[Tensor]:
        """srcs, pos_embeds: per level (N, C, h_l, w_l) -> encoded maps of the same shapes."""
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # (N, S, C)
        pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )  # (N, S, C)
        n = src.shape[0]
        ref = self.reference_points(shapes, src.device)  # (S, 2)
        ref = ref[None, :, None, :].expand(n, -1, len(shapes), 2)  # (N, S, nL, 2)
        # without autograd each layer writes its output over its input (the concatenated
        # maps, which only this loop reads): no new (N, S, C) tensor per layer, each
        # page-faulted afresh
        for layer in self.encoder.layers:
            assert isinstance(layer, MSDeformAttnEncoderLayer)  # for mypy (a plain ModuleList)
            in_place = layer.uses_blocks(src.shape[0] * src.shape[1])
            src = layer(src, pos, ref, shapes, out=src if in_place else None)
        maps = src.split([hh * ww for hh, ww in shapes], dim=1)
        return [m.transpose(1, 2).reshape(n, -1, hh, ww) for m, (hh, ww) in zip(maps, shapes)]


class MSDeformAttnPixelDecoder(nn.Module):
    # autocast dtypes under which the decoder still runs in float32 (see `forward`)
    fp32_under_autocast: tuple[torch.dtype, ...] = (torch.float16,)

    def __init__(
        self,
        in_channels: Sequence[int],  # channels of the backbone maps, stride ascending
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_encoder_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        num_groups: int = DEFAULT_GN_GROUPS,
        num_encoder_levels: int = 3,
        dropout: float = 0.0,
        coord_freqs: int = 0,  # avis option: > 0 adds embedded pixel coordinates to the outputs
    ) -> None:
        super().__init__()
        if len(in_channels) <= num_encoder_levels:
            raise ValueError(
                f"need more than {num_encoder_levels} input maps (encoder levels + FPN levels), "
                f"got {len(in_channels)}"
            )
        self.in_channels = [int(c) for c in in_channels]
        self.num_encoder_levels = num_encoder_levels
        self.num_fpn_levels = len(in_channels) - num_encoder_levels
        enc_channels = list(in_channels)[self.num_fpn_levels :][::-1]  # coarse to fine
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(ch, conv_dim, kernel_size=1), nn.GroupNorm(num_groups, conv_dim)
            )
            for ch in enc_channels
        )
        for proj in self.input_proj:
            conv = cast(nn.Conv2d, cast(nn.Sequential, proj)[0])
            assert conv.bias is not None  # built with a bias
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.zeros_(conv.bias)
        self.transformer = MSDeformAttnTransformer(
            conv_dim,
            num_heads,
            num_encoder_layers,
            ffn_dim,
            dropout,
            num_encoder_levels,
            num_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        assert self.mask_features.bias is not None  # built with a bias
        nn.init.zeros_(self.mask_features.bias)
        # avis option: a 1x1 embedding of pixel coordinates (fourier_coordinates) added to every
        # output map. Zero-initialised, so a fresh model computes what the official one does.
        self.coord_freqs = coord_freqs
        if coord_freqs > 0:
            self.coord_embed = nn.Conv2d(2 + 4 * coord_freqs, conv_dim, kernel_size=1)
            nn.init.zeros_(self.coord_embed.weight)
            assert self.coord_embed.bias is not None  # built with a bias
            nn.init.zeros_(self.coord_embed.bias)
        # FPN levels, from the one just finer than the encoder down to the finest
        for k in range(1, self.num_fpn_levels + 1):
            ch = in_channels[self.num_fpn_levels - k]
            self.add_module(f"adapter_{k}", ConvNorm(ch, conv_dim, 1, num_groups, relu=False))
            self.add_module(f"layer_{k}", ConvNorm(conv_dim, conv_dim, 3, num_groups, relu=True))

    def _add_coordinates(self, x: Tensor) -> Tensor:  # (N, C, h, w) -> (N, C, h, w)
        """x + the embedded coordinates of its h x w grid (padded map, so the same pixel of
        an image gets the same coordinates in every frame of a batch)."""
        coords = fourier_coordinates(x.shape[-2], x.shape[-1], self.coord_freqs, x.device)
        return x + self.coord_embed(coords.unsqueeze(0))  # broadcast over N

    def encoder_inputs(self, features: Sequence[Tensor]) -> list[Tensor]:
        """The backbone maps the encoder reads, coarse to fine (each (N, C_i, h, w))."""
        return list(features[self.num_fpn_levels :][::-1])

    def forward(
        self,
        features: Sequence[Tensor] | Mapping[str, Tensor],
        early: Sequence[Tensor] | None = None,
    ) -> PixelDecoderOutput:
        """features: backbone maps (N, C_i, H/s_i, W/s_i), stride ascending (a list, or a dict
        such as {"res2": ..., "res5": ...} in that order). early (an avis option): one term per
        encoder level, coarse to fine (`encoder_inputs`), each (N, conv_dim, 1 | h, w), added to
        that level's projected input before the deformable attention. Runs in fp32 under an autocast to
        a dtype of `fp32_under_autocast` (fp16: the official fp32 island, its deformable
        attention overflows fp16), else in the autocast dtype (bf16 has fp32's range)."""
        if isinstance(features, Mapping):
            features = list(features.values())
        channels = [int(f.shape[1]) if f.dim() == 4 else -1 for f in features]
        if channels != self.in_channels:
            shapes = [tuple(f.shape) for f in features]
            raise ValueError(
                f"expected {len(self.in_channels)} maps (N, C, h, w) with C = {self.in_channels} "
                f"(stride ascending), got feature maps of shapes {shapes}"
            )
        device_type = features[0].device.type
        island = torch.is_autocast_enabled(device_type) and (
            torch.get_autocast_dtype(device_type) in self.fp32_under_autocast
        )
        with torch.autocast(device_type=device_type, enabled=False) if island else nullcontext():
            enc_in = [f.float() for f in self.encoder_inputs(features)]  # coarse to fine
            srcs = [proj(x) for proj, x in zip(self.input_proj, enc_in)]
            if early is not None:
                if len(early) != len(srcs):
                    raise ValueError(f"expected {len(srcs)} early terms (one per encoder level), got {len(early)}")
                srcs = [x + e.float() for x, e in zip(srcs, early)]
            pos = [self.pe_layer(x) for x in enc_in]
            maps = self.transformer(srcs, pos)  # coarse to fine
            multi_scale = list(maps)
            out = maps[-1]
            for k in range(1, self.num_fpn_levels + 1):
                lateral = getattr(self, f"adapter_{k}")(features[self.num_fpn_levels - k].float())
                up = F.interpolate(
                    out, size=lateral.shape[-2:], mode="bilinear", align_corners=False
                )
                # in place onto the fresh lateral map (GroupNorm's backward does not read
                # its output): no new stride-4 tensor; same values
                out = getattr(self, f"layer_{k}")(lateral.add_(up))
            if self.coord_freqs > 0:
                multi_scale = [self._add_coordinates(m) for m in multi_scale]
                out = self._add_coordinates(out)
            return PixelDecoderOutput(
                mask_features=self.mask_features(out),
                stride4_features=out,
                multi_scale_features=multi_scale,
            )
