"""Normalisation layers of the convolutional backbones.

Letters: N batch, C channels, H x W spatial size.
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-5  # detectron2 FrozenBatchNorm2d / nn.BatchNorm2d epsilon
GN_GROUPS = 32  # detectron2 "GN" norm: nn.GroupNorm(32, C)
NORM_CHOICES = ("FrozenBN", "BN", "GN")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (detectron2 layout).

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are buffers (all in the
    state dict); the layer computes ``(x - running_mean) / sqrt(running_var + eps) * weight
    + bias``. Initialised to the identity, like detectron2 (``running_var = 1 - eps``).
    """

    # buffers (registered in __init__)
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale (C,), shift (C,)) with ``forward(x) = x * scale + shift`` per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        scale, shift = self.scale_shift()
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of a trained ``nn.BatchNorm2d`` (its current statistics)."""
        frozen = cls(bn.num_features, eps=bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.running_mean is not None and bn.running_var is not None:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen


def make_norm(norm: str, channels: int) -> nn.Module:
    """``"FrozenBN"`` (default of the official configs), ``"BN"`` or ``"GN"`` (32 groups).

    Use ``"BN"`` or ``"GN"`` to train a backbone from scratch: frozen BN at random init is a
    fixed identity and would leave the network without any normalisation.
    """
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels, eps=BN_EPS)
    if norm == "GN":
        return nn.GroupNorm(min(GN_GROUPS, channels), channels)
    raise ValueError(f"norm must be one of {NORM_CHOICES}, got {norm!r}")


def freeze_norms(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d``.

    Returns the module (a new one when ``module`` itself is a batch norm).
    """
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        new_child = freeze_norms(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
