"""ResNet backbones: shapes, detectron2 key layout, freezing, gradients, determinism."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avis.models.backbones import BACKBONES, FrozenBatchNorm2d, ResNet, build_backbone
from shared_data import AVISM_REFERENCE

REFERENCE_DIR = AVISM_REFERENCE
SMALL_SIZE = (64, 96)
EXPECTED_CHANNELS = {
    18: (64, 128, 256, 512),
    34: (64, 128, 256, 512),
    50: (256, 512, 1024, 2048),
}


def backbone_entries(listing: str) -> list[dict]:
    path = REFERENCE_DIR / listing
    if not path.exists():
        pytest.skip(f"reference listing {path} not available")
    prefix = "backbone."
    entries = json.loads(path.read_text())["keys"]
    return [
        {**entry, "key": entry["key"][len(prefix):]}
        for entry in entries
        if entry["key"].startswith(prefix)
    ]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_output_shapes_and_strides(depth: int) -> None:
    model = build_backbone(f"resnet{depth}").eval()
    height, width = SMALL_SIZE
    with torch.no_grad():
        features = model(torch.randn(2, 3, height, width))
    assert list(features) == ["res2", "res3", "res4", "res5"]
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    for (name, feature), channels in zip(features.items(), EXPECTED_CHANNELS[depth]):
        stride = model.out_strides[name]
        assert model.out_channels[name] == channels
        assert feature.shape == (2, channels, height // stride, width // stride)


def test_odd_input_sizes_round_up() -> None:
    model = ResNet(18).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 65, 97))
    for name, feature in features.items():
        stride = model.out_strides[name]
        assert feature.shape[-2:] == (-(-65 // stride), -(-97 // stride))


def test_resnet50_state_dict_matches_official_listing() -> None:
    expected = backbone_entries("keys_R50.json")
    model = build_backbone("resnet50")
    parameter_names = {name for name, _ in model.named_parameters()}
    state = model.state_dict()
    assert list(state) == [entry["key"] for entry in expected]  # same keys, same order
    for entry in expected:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], entry["key"]
        kind = "parameter" if entry["key"] in parameter_names else "buffer"
        assert kind == entry["kind"], entry["key"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_random_state_dict_round_trips(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    model = build_backbone(name)
    random_state = {
        key: torch.rand(value.shape, generator=generator) + 0.5
        for key, value in model.state_dict().items()
    }
    model.load_state_dict(random_state, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, random_state[key]), key


def test_frozen_batch_norm_matches_batch_norm_in_eval() -> None:
    generator = torch.Generator().manual_seed(1)
    channels = 8
    frozen = FrozenBatchNorm2d(channels)
    for buffer in (frozen.weight, frozen.bias, frozen.running_mean):
        buffer.copy_(torch.randn(channels, generator=generator))
    frozen.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    x = torch.randn(2, channels, 5, 6, generator=generator)
    expected = F.batch_norm(
        x, frozen.running_mean, frozen.running_var, frozen.weight, frozen.bias,
        training=False, eps=1e-5,
    )
    torch.testing.assert_close(frozen(x), expected)
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    assert not list(frozen.parameters())


def test_conv_with_frozen_norm_folds_to_conv_then_norm() -> None:
    from avis.models.backbones.resnet import ConvNorm

    generator = torch.Generator().manual_seed(2)
    conv = ConvNorm(4, 6, 3, "FrozenBN", stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        for buffer in (conv.norm.weight, conv.norm.bias, conv.norm.running_mean):
            buffer.copy_(torch.randn(6, generator=generator))
        conv.norm.running_var.copy_(torch.rand(6, generator=generator) + 0.1)
    x = torch.randn(2, 4, 9, 10, generator=generator)
    unfolded = conv.norm(F.conv2d(x, conv.weight, None, stride=2, padding=1))
    torch.testing.assert_close(conv(x), unfolded, rtol=1e-5, atol=1e-5)
    assert sorted(conv.state_dict()) == sorted(
        ["weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"]
    )


@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_gradients_reach_every_trainable_parameter(norm: str) -> None:
    torch.manual_seed(0)
    model = ResNet(18, norm=norm).train()
    features = model(torch.randn(2, 3, *SMALL_SIZE))
    sum(feature.square().mean() for feature in features.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad, name
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_resnet50_frozen_bn_backward_reaches_convs() -> None:
    torch.manual_seed(0)
    model = ResNet(50, stem_channels=16).train()  # narrow: same structure, fewer weights
    features = model(torch.randn(1, 3, 32, 32))
    sum(feature.mean() for feature in features.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_freeze_at_two_freezes_stem_and_res2() -> None:
    model = ResNet(18, norm="BN", freeze_at=2)
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("stem.", "res2."))
        assert parameter.requires_grad != frozen, name
    for name, module in model.named_modules():
        if name.endswith(".norm"):
            frozen = name.startswith(("stem.", "res2."))
            assert isinstance(module, FrozenBatchNorm2d) == frozen, name
            assert isinstance(module, nn.BatchNorm2d) != frozen, name


def test_eval_forward_is_deterministic_and_memory_formats_agree() -> None:
    torch.manual_seed(0)
    model = ResNet(18, norm="BN").eval()
    plain = ResNet(18, norm="BN", channels_last=False).eval()
    plain.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, *SMALL_SIZE)
    with torch.no_grad():
        first = model(images)
        second = model(images)
        last = model(images.contiguous(memory_format=torch.channels_last))
        reference = plain(images)
    for name in first:
        assert torch.equal(first[name], second[name])
        assert first[name].is_contiguous()
        assert last[name].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(last[name], first[name], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(reference[name], first[name], rtol=1e-4, atol=1e-4)


def test_unknown_names_and_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet51")
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="norm"):
        ResNet(depth=18, norm="LN")
    assert {"resnet18", "resnet34", "resnet50"} <= set(BACKBONES)
