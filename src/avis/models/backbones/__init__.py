"""Image backbones: each maps normalised images (N, 3, H, W) to ``{"res2".."res5"}``.

Every backbone has ``out_channels`` and ``out_strides`` (dicts keyed by feature name).
``BACKBONES`` is a plain dict of builders; ``build_backbone(name, **kwargs)`` forwards
keyword arguments to the constructor (e.g. ``norm="GN"`` or ``drop_path_rate=0.0``).
``load_backbone_weights(backbone, path)`` loads ImageNet weights strictly (see ``weights``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from avis.models.backbones.norm import FrozenBatchNorm2d
from avis.models.backbones.resnet import FEATURE_NAMES, FEATURE_STRIDES, ResNet
from avis.models.backbones.swin import SWIN_PRESETS, SwinTransformer
from avis.models.backbones.weights import LoadReport, load_backbone_weights

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": partial(ResNet, depth=18),
    "resnet34": partial(ResNet, depth=34),
    "resnet50": partial(ResNet, depth=50),
    "swin_tiny": partial(SwinTransformer, **SWIN_PRESETS["tiny"]),
    "swin_small": partial(SwinTransformer, **SWIN_PRESETS["small"]),
    "swin_base": partial(SwinTransformer, **SWIN_PRESETS["base"]),
    "swin_large": partial(SwinTransformer, **SWIN_PRESETS["large"]),
}


def build_backbone(name: str, **kwargs: object) -> nn.Module:
    """Build the backbone preset ``name`` (a key of ``BACKBONES``); kwargs override it."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = [
    "BACKBONES",
    "FEATURE_NAMES",
    "FEATURE_STRIDES",
    "FrozenBatchNorm2d",
    "LoadReport",
    "ResNet",
    "SwinTransformer",
    "build_backbone",
    "load_backbone_weights",
]
