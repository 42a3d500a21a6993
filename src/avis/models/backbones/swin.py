"""Swin Transformer backbone in the layout of Mask2Former's ``D2SwinTransformer``.

State-dict names: ``patch_embed.{proj,norm}``, ``layers.{i}.blocks.{j}.{norm1, attn.qkv,
attn.proj, attn.relative_position_bias_table, attn.relative_position_index, norm2, mlp.fc1,
mlp.fc2}``, ``layers.{i}.downsample.{reduction,norm}`` and one output LayerNorm ``norm{i}``
per stage. As in the official detection code, feature maps are zero-padded (after
``norm1``) to a multiple of the window size and the padded tokens take part in the
attention of their window; only the cyclic shift is masked (with -100).

Letters: B batch, H x W token grid of a stage, C channels, h heads, d = C / h, w window
side, N = w * w tokens per window, nW windows per image.
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from avis.models.backbones.resnet import FEATURE_NAMES, FEATURE_STRIDES
from avis.models.backbones.windows import WindowLayout, relative_position_index, window_layout

PATCH_SIZE = 4
INIT_STD = 0.02  # truncated-normal std of linear weights and the bias tables


class SwinPreset(TypedDict):
    """Constructor arguments of a `SwinTransformer` preset."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int


# preset -> constructor arguments (window 7: ImageNet-1k 224 weights; 12: Swin-L 22k 384)
SWIN_PRESETS: dict[str, SwinPreset] = {
    "tiny": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24),
             "window_size": 7},
    "small": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24),
              "window_size": 7},
    "base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32),
             "window_size": 7},
    "large": {"embed_dim": 192, "depths": (2, 2, 18, 2), "num_heads": (6, 12, 24, 48),
              "window_size": 12},
}


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    relative_position_index: torch.Tensor  # buffer (N, N), registered in __init__

    def __init__(
        self, dim: int, window_size: int, num_heads: int, qkv_bias: bool,
        attn_drop: float, proj_drop: float,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin stage width {dim} is not divisible by {num_heads} heads")
        self.window_size = window_size
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        num_offsets = (2 * window_size - 1) ** 2
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_offsets, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self) -> torch.Tensor:
        """(h, N, N) relative position bias."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, nW, N, C), mask (nW, N, N) or None -> (B, nW, N, C).

        Attention runs on 4-D (B * nW, h, N, d) inputs with a 4-D mask of the same batch
        shape, which lets CPU ``scaled_dot_product_attention`` use its fused kernel (a 3-D
        or 5-D mask falls back to the slower unfused path). With a shift mask, which differs
        per window, images are attended one at a time so the mask is never copied B times.
        """
        b, nw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(b * nw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B * nW, h, N, d)
        bias = self.position_bias().to(q.dtype)  # (h, N, N)
        dropout = self.attn_drop if self.training else 0.0
        if mask is None:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.expand(b * nw, heads, n, n), dropout_p=dropout
            )
        else:
            window_bias = bias[None] + mask[:, None].to(q.dtype)  # (nW, h, N, N)
            outs = [
                F.scaled_dot_product_attention(qi, ki, vi, attn_mask=window_bias, dropout_p=dropout)
                for qi, ki, vi in zip(q.split(nw), k.split(nw), v.split(nw))
            ]  # one image (nW windows) per call
            out = outs[0] if b == 1 else torch.cat(outs)
        out = out.transpose(1, 2).reshape(b, nw, n, c)  # (B, nW, N, C)
        return self.proj_drop(self.proj(out))


class SwinBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm residual branches."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
        qkv_bias: bool, drop: float, attn_drop: float, drop_path: float,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift {shift_size} must be in [0, window {window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """x (B, H, W, C); layout of this block's (shifted) windows -> (B, H, W, C).

        As in the official code, the map is zero-padded after ``norm1`` and padded tokens
        are attended to (only the shift is masked).
        """
        b, height, width, c = x.shape
        y = self.norm1(x).reshape(b, height * width, c)
        if layout.padded:
            y = torch.cat([y, y.new_zeros(b, 1, c)], dim=1)  # row H * W: padding
        windows = y.index_select(1, layout.gather).view(b, layout.num_windows, -1, c)
        mask = None if layout.mask is None else layout.mask.to(x.dtype)
        y = self.attn(windows, mask).reshape(b, -1, c)  # (B, nW * N, C)
        y = y.index_select(1, layout.scatter).view(b, height, width, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (zero-padded to even size) -> LayerNorm -> linear 4C -> 2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)."""
        _, height, width, _ = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks alternating plain / shifted windows, then an optional patch merging."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
        qkv_bias: bool, drop: float, attn_drop: float, drop_paths: list[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, num_heads, window_size, 0 if i % 2 == 0 else self.shift_size, mlp_ratio,
                qkv_bias, drop, attn_drop, drop_paths[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, H, W, C) -> (stage output (B, H, W, C), merged (B, H/2, W/2, 2C) or None)."""
        _, height, width, _ = x.shape
        layouts = [window_layout(height, width, self.window_size, 0, x.device)]
        if len(self.blocks) > 1:
            layouts.append(
                window_layout(height, width, self.window_size, self.shift_size, x.device)
            )
        for i, block in enumerate(self.blocks):
            x = block(x, layouts[i % 2])
        return x, (self.downsample(x) if self.downsample is not None else None)


class PatchEmbed(nn.Module):
    """Zero-pad to a multiple of the patch, non-overlapping patch conv, LayerNorm."""

    def __init__(self, patch_size: int, in_channels: int, dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, ceil(H/p), ceil(W/p), C)."""
        height, width = x.shape[-2:]
        x = F.pad(x, (0, (-width) % self.patch_size, 0, (-height) % self.patch_size))
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class SwinTransformer(nn.Module):
    """Swin backbone returning ``res2..res5`` (strides 4/8/16/32), each after ``norm{i}``.

    Args:
        embed_dim: width of stage 1 (doubles per stage).
        depths, num_heads: blocks and attention heads per stage.
        window_size: attention window side (7 for the ImageNet-1k 224 weights, 12 for
            AVISM's Swin-L).
        mlp_ratio, qkv_bias: MLP width factor; bias of the qkv projection.
        drop_rate, attn_drop_rate: dropout after projections / on attention weights.
        drop_path_rate: stochastic depth, growing linearly from 0 over all blocks.
        patch_norm: LayerNorm after the patch embedding.
        frozen_stages: as in the official code: -1 nothing, 0 the patch embedding,
            k >= 2 also stages 0..k-2 (no gradients, eval mode).
        in_channels: input image channels.

    Input: (N, in_channels, H, W), normalised. Output: dict res2..res5 of
    (N, out_channels[k], ceil(H / s_k), ceil(W / s_k)), in the memory format of the input.
    No absolute position embedding (``APE`` is off in every AVISM config).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.3,
        patch_norm: bool = True,
        frozen_stages: int = -1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(depths) != len(FEATURE_NAMES) or len(num_heads) != len(FEATURE_NAMES):
            raise ValueError(
                f"Swin needs {len(FEATURE_NAMES)} stages, got depths {depths} and heads {num_heads}"
            )
        self.frozen_stages = frozen_stages
        self.patch_embed = PatchEmbed(PATCH_SIZE, in_channels, embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        widths = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, (width, depth, heads) in enumerate(zip(widths, depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    width, depth, heads, window_size, mlp_ratio, qkv_bias, drop_rate,
                    attn_drop_rate, rates[start:start + depth],
                    downsample=i < len(depths) - 1,
                )
            )
        for i, width in enumerate(widths):
            self.add_module(f"norm{i}", nn.LayerNorm(width))
        self.out_channels: dict[str, int] = dict(zip(FEATURE_NAMES, widths))
        self.out_strides: dict[str, int] = dict(FEATURE_STRIDES)
        self._init_weights()
        self._freeze_stages()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, WindowAttention):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=INIT_STD)

    def _frozen_modules(self) -> list[nn.Module]:
        modules: list[nn.Module] = [self.patch_embed] if self.frozen_stages >= 0 else []
        if self.frozen_stages >= 2:
            modules += [self.pos_drop] + list(self.layers[: self.frozen_stages - 1])
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> SwinTransformer:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"Swin expects (N, C, H, W) images, got shape {tuple(x.shape)}")
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not (
            x.is_contiguous()
        )
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        x = self.pos_drop(self.patch_embed(x))  # (N, H/4, W/4, C)
        features: dict[str, torch.Tensor] = {}
        for i, (name, layer) in enumerate(zip(FEATURE_NAMES, self.layers)):
            out, x = layer(x)
            out = getattr(self, f"norm{i}")(out)  # (N, H_i, W_i, C_i)
            features[name] = out.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
            if x is None:
                break
        return features
