"""ResNet backbones in the detectron2 layout (the AVISM R50 backbone and small variants).

State-dict names follow detectron2 (``stem.conv1.weight``, ``stem.conv1.norm.*``,
``res{2..5}.{i}.conv{1,2,3}.weight`` + ``.norm.*``, ``res{2..5}.0.shortcut.weight`` +
``.shortcut.norm.*``), so official checkpoints load without renaming.

Letters: N batch, C channels, H x W input size; res_k has size ceil(H / s) x ceil(W / s)
with s = 4, 8, 16, 32 for k = 2..5.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from avis.models.backbones.norm import FrozenBatchNorm2d, freeze_norms, make_norm

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
STEM_KERNEL = 7
STEM_STRIDE = 2
STEM_POOL_KERNEL = 3
STEM_POOL_STRIDE = 2
BOTTLENECK_EXPANSION = 4
# depth -> (block type, number of blocks per stage res2..res5)
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its norm, stored as the child ``norm``.

    Same parameter names as detectron2's ``Conv2d(..., norm=...)``: ``weight``, ``norm.*``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: str,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.norm = make_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm, FrozenBatchNorm2d):
            # a frozen norm is a per-channel affine map: fold it into the convolution's weight
            # and bias (one pass over the output instead of three; same result up to rounding)
            scale, shift = self.norm.scale_shift()  # (C_out,)
            weight = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
            return self._conv_forward(x, weight, shift.to(x.dtype))
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    """7x7 stride-2 conv + norm + ReLU + 3x3 stride-2 max pool: stride 4 overall."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv1 = ConvNorm(
            in_channels, out_channels, STEM_KERNEL, norm,
            stride=STEM_STRIDE, padding=STEM_KERNEL // 2,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(
            x, kernel_size=STEM_POOL_KERNEL, stride=STEM_POOL_STRIDE,
            padding=STEM_POOL_KERNEL // 2,
        )


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); a 1x1 projection shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        # shortcut is created first: it comes first in the state dict, as in detectron2
        self.shortcut = (
            ConvNorm(in_channels, out_channels, 1, norm, stride=stride)
            if in_channels != out_channels
            else None
        )
        self.conv1 = ConvNorm(in_channels, out_channels, 3, norm, stride=stride, padding=1)
        self.conv2 = ConvNorm(out_channels, out_channels, 3, norm, padding=1)

    def last_norm(self) -> nn.Module:
        return self.conv2.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out.add_(identity))  # in place: see BottleneckBlock.forward


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101).

    ``stride_in_1x1=False`` (the Mask2Former/AVISM configs, torchvision weights) puts the
    stride on the 3x3 conv; ``True`` puts it on the first 1x1 conv (MSRA/Caffe2 weights).
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        stride: int,
        norm: str,
        stride_in_1x1: bool,
    ) -> None:
        super().__init__()
        self.shortcut = (
            ConvNorm(in_channels, out_channels, 1, norm, stride=stride)
            if in_channels != out_channels
            else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, norm, stride=stride_1x1)
        self.conv2 = ConvNorm(
            bottleneck_channels, bottleneck_channels, 3, norm, stride=stride_3x3, padding=1
        )
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, norm)

    def last_norm(self) -> nn.Module:
        return self.conv3.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        # the residual is added in place onto the fresh conv (+ norm) output, whose backward
        # does not read it: no new (N, C, h, w) tensor per block; same values
        return F.relu_(out.add_(identity))


class ResNet(nn.Module):
    """detectron2-style ResNet returning ``res2..res5`` (strides 4/8/16/32).

    Args:
        depth: 18, 34 (basic blocks), 50 or 101 (bottleneck blocks).
        norm: ``"FrozenBN"`` (official, for pretrained weights), ``"BN"`` or ``"GN"``
            (trainable norms for training from scratch).
        freeze_at: detectron2 ``FREEZE_AT``: 0 freezes nothing, 1 the stem, 2 the stem and
            res2, ..., 5 everything. Frozen parts stop gradients and their batch norms
            become ``FrozenBatchNorm2d``.
        stride_in_1x1: bottleneck stride on the first 1x1 conv (detectron2
            ``STRIDE_IN_1X1``); the AVISM configs use ``False``.
        stem_channels: width of the stem (detectron2 ``STEM_OUT_CHANNELS``).
        in_channels: input image channels.
        zero_init_residual: start each block's last norm scale at 0 (trainable norms only),
            which helps training from scratch.
        channels_last: run the convolutions in channels-last memory format (faster on
            CPU: ResNet-50 at 384x640 took 1.2-1.7x less time on a shared 2-core machine);
            outputs are returned in the memory format of the input either way.

    Input: (N, in_channels, H, W), already normalised. Output: dict res2..res5 of
    (N, out_channels[k], ceil(H / s_k), ceil(W / s_k)), in the memory format of the input.
    """

    def __init__(
        self,
        depth: int = 50,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        stride_in_1x1: bool = False,
        stem_channels: int = 64,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        if not 0 <= freeze_at <= len(FEATURE_NAMES) + 1:
            raise ValueError(f"freeze_at must be in 0..{len(FEATURE_NAMES) + 1}, got {freeze_at}")
        block_type, blocks_per_stage = RESNET_SPECS[depth]
        self.depth = depth
        self.norm = norm
        self.freeze_at = freeze_at
        self.channels_last = channels_last
        self.stem = BasicStem(in_channels, stem_channels, norm)

        self.out_channels: dict[str, int] = {}
        self.out_strides: dict[str, int] = dict(FEATURE_STRIDES)
        width = stem_channels  # bottleneck width of res2; doubles per stage
        current = stem_channels
        for stage_index, (name, num_blocks) in enumerate(zip(FEATURE_NAMES, blocks_per_stage)):
            first_stride = 1 if stage_index == 0 else 2
            out = width * BOTTLENECK_EXPANSION if block_type == "bottleneck" else width
            blocks = []
            for block_index in range(num_blocks):
                stride = first_stride if block_index == 0 else 1
                if block_type == "bottleneck":
                    block: nn.Module = BottleneckBlock(
                        current, width, out, stride, norm, stride_in_1x1
                    )
                else:
                    block = BasicBlock(current, out, stride, norm)
                blocks.append(block)
                current = out
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out
            width *= 2

        self._init_weights(zero_init_residual)
        self._freeze(freeze_at)
        if channels_last:
            self._store_weights_channels_last()

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # detectron2 c2_msra_fill
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, BottleneckBlock)):
                    last = module.last_norm()
                    if not isinstance(last, FrozenBatchNorm2d):
                        # a BN or GN weight (Module.__getattr__ is typed Tensor | Module)
                        nn.init.zeros_(cast(torch.Tensor, last.weight))

    def _store_weights_channels_last(self) -> None:
        """Keep every conv weight in the channels-last layout its convolution runs in.

        The channels-last kernels return weight gradients in that layout. With contiguous
        weights, autograd copied each 3x3 weight's gradient into the contiguous layout on every
        step, and kept the 1x1 (shortcut) gradients as they came: for a (Co, Ci, 1, 1) tensor
        both layouts are the same memory order, but their strides differ ((Ci, 1, Ci, Ci) vs
        (Ci, 1, 1, 1)), and DDP, which compares strides literally, warned "Grad strides do not
        match bucket view strides" once per process. Same values; `load_state_dict` keeps the
        layout (it copies into these tensors).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                weight = module.weight
                stored = torch.empty(
                    weight.shape, dtype=weight.dtype, device=weight.device,
                    memory_format=torch.channels_last,
                )  # fmt: skip
                weight.data = stored.copy_(weight.detach())

    def _freeze(self, freeze_at: int) -> None:
        parts: list[nn.Module] = [self.stem] if freeze_at >= 1 else []
        parts += [getattr(self, name) for name in FEATURE_NAMES[: max(freeze_at - 1, 0)]]
        for part in parts:
            for parameter in part.parameters():
                parameter.requires_grad_(False)
            freeze_norms(part)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ResNet expects (N, C, H, W) images, got shape {tuple(x.shape)}")
        output_format = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format
        )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for name in FEATURE_NAMES:
            x = getattr(self, name)(x)
            features[name] = x.contiguous(memory_format=output_format)
        return features
