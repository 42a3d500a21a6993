"""Swin backbone: shapes, official key layout, window attention against a plain reference."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from avis.models.backbones import build_backbone
from avis.models.backbones.swin import PatchMerging, SwinBlock, SwinTransformer
from avis.models.backbones.windows import (
    SHIFT_MASK_VALUE,
    relative_position_index,
    shifted_window_mask,
    window_layout,
    window_partition,
)
from shared_data import AVISM_REFERENCE

REFERENCE_DIR = AVISM_REFERENCE
SMALL_SIZE = (64, 96)
# narrow Swin with the Swin-L window (12) so that padding, shifts and merging all occur
NARROW = {"embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 3, 4), "window_size": 12}
PRESET_WIDTHS = {"swin_tiny": 96, "swin_small": 96, "swin_base": 128, "swin_large": 192}


@pytest.mark.parametrize("name", sorted(PRESET_WIDTHS))
def test_preset_output_shapes_and_strides(name: str) -> None:
    height, width = SMALL_SIZE
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = build_backbone(name).eval()
        features = model(torch.empty(2, 3, height, width))
    assert list(features) == ["res2", "res3", "res4", "res5"]
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    for i, (key, feature) in enumerate(features.items()):
        channels = PRESET_WIDTHS[name] * 2**i
        stride = model.out_strides[key]
        assert model.out_channels[key] == channels
        assert feature.shape == (2, channels, height // stride, width // stride)


def test_swin_tiny_real_forward_is_finite() -> None:
    torch.manual_seed(0)
    model = build_backbone("swin_tiny").eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 61, 90))  # not a multiple of 4 or of the window
    for key, feature in features.items():
        stride = model.out_strides[key]
        assert feature.shape[-2:] == (-(-61 // stride), -(-90 // stride))
        assert torch.isfinite(feature).all()


def test_swin_large_state_dict_matches_official_listing() -> None:
    path = REFERENCE_DIR / "keys_SwinL.json"
    if not path.exists():
        pytest.skip(f"reference listing {path} not available")
    prefix = "backbone."
    expected = [
        {**entry, "key": entry["key"][len(prefix):]}
        for entry in json.loads(path.read_text())["keys"]
        if entry["key"].startswith(prefix)
    ]
    with torch.device("meta"):
        model = build_backbone("swin_large")
    parameter_names = {name for name, _ in model.named_parameters()}
    state = model.state_dict()
    assert list(state) == [entry["key"] for entry in expected]  # same keys, same order
    for entry in expected:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], entry["key"]
        kind = "parameter" if entry["key"] in parameter_names else "buffer"
        assert kind == entry["kind"], entry["key"]


def test_relative_position_index_brute_force() -> None:
    window = 5
    index = relative_position_index(window)
    tokens = [(r, c) for r in range(window) for c in range(window)]
    for i, (r1, c1) in enumerate(tokens):
        for j, (r2, c2) in enumerate(tokens):
            expected = (r1 - r2 + window - 1) * (2 * window - 1) + (c1 - c2 + window - 1)
            assert index[i, j].item() == expected


@pytest.mark.parametrize(("height", "width", "window"), [(12, 18, 6), (7, 7, 7), (16, 8, 4)])
def test_shifted_window_mask_brute_force(height: int, width: int, window: int) -> None:
    shift = window // 2
    # the official construction: label 3 x 3 slices of the padded grid, then compare labels
    labels = torch.zeros(height, width)
    count = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            labels[rows, cols] = count
            count += 1
    expected = []
    for top in range(0, height, window):
        for left in range(0, width, window):
            flat = labels[top:top + window, left:left + window].reshape(-1).tolist()
            expected.append(
                [[0.0 if a == b else SHIFT_MASK_VALUE for b in flat] for a in flat]
            )
    mask = shifted_window_mask(height, width, window, shift)
    assert torch.equal(mask, torch.tensor(expected))


def reference_block(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """The official block algorithm written plainly: one window and one head at a time."""
    attention = block.attn
    w, s, heads = block.window_size, block.shift_size, attention.num_heads
    batch, height, width, channels = x.shape
    head_dim = channels // heads
    y = F.pad(block.norm1(x), (0, 0, 0, (-width) % w, 0, (-height) % w))
    padded_h, padded_w = y.shape[1:3]
    mask = shifted_window_mask(padded_h, padded_w, w, s).to(x.dtype) if s else None
    y = torch.roll(y, (-s, -s), (1, 2))
    bias = attention.relative_position_bias_table[attention.relative_position_index]  # (N,N,h)
    out = torch.zeros_like(y)
    for b in range(batch):
        window_index = 0
        for top in range(0, padded_h, w):
            for left in range(0, padded_w, w):
                tokens = y[b, top:top + w, left:left + w].reshape(w * w, channels)
                q, k, v = attention.qkv(tokens).split(channels, dim=-1)
                merged = []
                for h in range(heads):
                    part = slice(h * head_dim, (h + 1) * head_dim)
                    logits = (q[:, part] * head_dim**-0.5) @ k[:, part].T + bias[:, :, h]
                    if mask is not None:
                        logits = logits + mask[window_index]
                    merged.append(torch.softmax(logits, dim=-1) @ v[:, part])
                result = attention.proj(torch.cat(merged, dim=-1))
                out[b, top:top + w, left:left + w] = result.view(w, w, channels)
                window_index += 1
    out = torch.roll(out, (s, s), (1, 2))[:, :height, :width]
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_block_and_gradients_match_plain_reference(shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(
        dim=12, num_heads=3, window_size=4, shift_size=shift, mlp_ratio=2.0, qkv_bias=True,
        drop=0.0, attn_drop=0.0, drop_path=0.0,
    ).double().eval()
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    x = torch.randn(2, 6, 7, 12, dtype=torch.float64)  # 6 x 7 is padded to 8 x 8
    layout = window_layout(6, 7, 4, shift)
    weights = torch.randn(2, 6, 7, 12, dtype=torch.float64)
    gradients = []
    for forward in (lambda: block(x, layout), lambda: reference_block(block, x)):
        block.zero_grad()
        out = forward()
        (out * weights).sum().backward()
        gradients.append((out.detach(), {n: p.grad.clone() for n, p in block.named_parameters()}))
    (ours, our_grads), (expected, expected_grads) = gradients
    torch.testing.assert_close(ours, expected)
    for name, grad in expected_grads.items():  # incl. the relative position bias table
        torch.testing.assert_close(our_grads[name], grad, msg=name)


@pytest.mark.parametrize(("height", "width", "window", "shift"), [(6, 7, 4, 2), (8, 8, 4, 0), (5, 13, 3, 1)])
def test_window_layout_is_pad_roll_partition_and_back(
    height: int, width: int, window: int, shift: int
) -> None:
    x = torch.randn(2, height, width, 3)
    padded = F.pad(x, (0, 0, 0, (-width) % window, 0, (-height) % window))
    expected = window_partition(torch.roll(padded, (-shift, -shift), (1, 2)), window)
    layout = window_layout(height, width, window, shift)
    flat = torch.cat([x.reshape(2, height * width, 3), torch.zeros(2, 1, 3)], dim=1)
    windows = flat.index_select(1, layout.gather).view(2, layout.num_windows, -1, 3)
    assert torch.equal(windows, expected)
    back = windows.reshape(2, -1, 3).index_select(1, layout.scatter).view(x.shape)
    assert torch.equal(back, x)
    assert layout.padded == (height % window != 0 or width % window != 0)
    assert (layout.mask is None) == (shift == 0)


def test_patch_merging_order_and_odd_padding() -> None:
    torch.manual_seed(0)
    merge = PatchMerging(3).double()
    x = torch.randn(1, 5, 3, 3, dtype=torch.float64)
    padded = F.pad(x, (0, 0, 0, 1, 0, 1))  # 6 x 4
    rows = []
    for r in range(3):
        row = []
        for c in range(2):
            parts = [padded[0, 2 * r + dr, 2 * c + dc] for dr, dc in ((0, 0), (1, 0), (0, 1), (1, 1))]
            row.append(torch.cat(parts))
        rows.append(torch.stack(row))
    expected = merge.reduction(merge.norm(torch.stack(rows)[None]))
    with torch.no_grad():
        torch.testing.assert_close(merge(x), expected)


def test_random_state_dict_round_trips() -> None:
    model = SwinTransformer(**NARROW)
    generator = torch.Generator().manual_seed(0)
    random_state = {
        key: (torch.rand(value.shape, generator=generator) if value.is_floating_point() else value)
        for key, value in model.state_dict().items()
    }
    model.load_state_dict(random_state, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, random_state[key]), key


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(0)
    model = SwinTransformer(**NARROW, drop_path_rate=0.0).train()
    features = model(torch.randn(2, 3, *SMALL_SIZE))
    sum(feature.square().mean() for feature in features.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_eval_deterministic_train_stochastic_and_channels_last() -> None:
    torch.manual_seed(0)
    model = SwinTransformer(**NARROW, drop_path_rate=0.5)
    images = torch.randn(2, 3, *SMALL_SIZE)
    with torch.no_grad():
        model.eval()
        first, second = model(images), model(images)
        last = model(images.contiguous(memory_format=torch.channels_last))
        model.train()
        noisy = model(images)
    assert any(not torch.equal(noisy[k], first[k]) for k in first)
    for key in first:
        assert torch.equal(first[key], second[key])
        assert first[key].is_contiguous()
        assert last[key].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(last[key], first[key], rtol=1e-4, atol=1e-4)


def test_frozen_stages_stay_frozen_in_train_mode() -> None:
    model = SwinTransformer(**NARROW, frozen_stages=2).train()
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("patch_embed.", "layers.0."))
        assert parameter.requires_grad != frozen, name
    assert not model.layers[0].training and model.layers[1].training
