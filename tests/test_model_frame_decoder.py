"""Behaviour of the position encoding, pixel decoder and frame decoder on small random models."""

from __future__ import annotations

import math

import pytest
import torch

from avis.models.frame_decoder import FrameDecoder
from avis.models.pixel_decoder import MSDeformAttnPixelDecoder
from avis.models.position import PositionEmbeddingSine, sine_position_encoding

C, FQ, K, AUDIO, HEADS = 32, 6, 5, 12, 4
CHANNELS = (8, 12, 16, 20)
STRIDES = (4, 8, 16, 32)
H, W = 64, 96


def _models(seed: int = 0) -> tuple[MSDeformAttnPixelDecoder, FrameDecoder]:
    torch.manual_seed(seed)
    pixel = MSDeformAttnPixelDecoder(
        CHANNELS,
        conv_dim=C,
        mask_dim=C,
        num_encoder_layers=2,
        num_heads=HEADS,
        num_points=2,
        ffn_dim=48,
        num_groups=8,
    )
    frame = FrameDecoder(
        in_channels=C,
        hidden_dim=C,
        num_queries=FQ,
        num_classes=K,
        nheads=HEADS,
        dim_feedforward=48,
        dec_layers=4,
        mask_dim=C,
        audio_dim=AUDIO,
    )
    # move the zero/one-initialised parameters off their init so every path matters
    with torch.no_grad():
        for p in list(pixel.parameters()) + list(frame.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    return pixel, frame


def _inputs(n: int, seed: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, ch, H // s, W // s, generator=g) for ch, s in zip(CHANNELS, STRIDES)]
    return feats, torch.randn(n, AUDIO, generator=g)


def _run(pixel, frame, feats, audio, layers: int = 1):
    pd = pixel(feats)
    return pd, frame(
        pd.multi_scale_features, pd.mask_features, audio, num_frame_query_layers=layers
    )


def test_position_encoding_formula() -> None:
    h, w, f = 3, 5, 4
    pos = sine_position_encoding(h, w, f)
    for i in range(h):
        for j in range(w):
            for k in range(f):
                freq = 10000 ** (2 * (k // 2) / f)
                y = (i + 1) / (h + 1e-6) * 2 * math.pi / freq
                x = (j + 1) / (w + 1e-6) * 2 * math.pi / freq
                trig = math.sin if k % 2 == 0 else math.cos
                assert pos[k, i, j].item() == pytest.approx(trig(y), abs=1e-5)
                assert pos[f + k, i, j].item() == pytest.approx(trig(x), abs=1e-5)
    batch = PositionEmbeddingSine(f)(torch.zeros(2, 7, h, w))
    assert batch.shape == (2, 2 * f, h, w)
    assert torch.equal(batch[1], pos)


def test_shapes_and_containers() -> None:
    pixel, frame = _models()
    n = 3
    pd, fd = _run(pixel.eval(), frame.eval(), *_inputs(n), layers=2)
    assert pd.mask_features.shape == (n, C, H // 4, W // 4)
    assert pd.stride4_features.shape == (n, C, H // 4, W // 4)
    assert [tuple(m.shape) for m in pd.multi_scale_features] == [
        (n, C, H // s, W // s) for s in (32, 16, 8)
    ]
    assert fd.pred_logits.shape == (5, n, FQ, K + 1)
    assert fd.pred_masks.shape == (5, n, FQ, H // 4, W // 4)
    assert fd.frame_queries.shape == (2, n, FQ, C)
    assert fd.audio_fusion.shape == (FQ, n, C)
    # the frame queries are the decoder_norm outputs of the last predictions
    torch.testing.assert_close(fd.pred_logits[-1], frame.class_embed(fd.frame_queries[-1]))


def test_frames_are_independent_batch_elements() -> None:
    """Several clips of several frames in one batch = each frame run alone."""
    pixel, frame = _models()
    pixel.eval()
    frame.eval()
    feats, audio = _inputs(2 * 3)  # B = 2 clips x T = 3 frames
    with torch.no_grad():
        pd_all, fd_all = _run(pixel, frame, feats, audio, layers=3)
        for i in (0, 4):
            pd_one, fd_one = _run(pixel, frame, [f[i : i + 1] for f in feats], audio[i : i + 1], 3)
            torch.testing.assert_close(pd_all.mask_features[i : i + 1], pd_one.mask_features)
            torch.testing.assert_close(fd_all.pred_logits[:, i : i + 1], fd_one.pred_logits)
            torch.testing.assert_close(
                fd_all.pred_masks[:, i : i + 1], fd_one.pred_masks, atol=1e-4, rtol=1e-4
            )
            torch.testing.assert_close(fd_all.frame_queries[:, i : i + 1], fd_one.frame_queries)


def test_audio_changes_the_queries() -> None:
    pixel, frame = _models()
    feats, audio = _inputs(2)
    with torch.no_grad():
        _, a = _run(pixel.eval(), frame.eval(), feats, audio)
        _, b = _run(pixel, frame, feats, audio.flip(0))
    assert not torch.allclose(a.audio_fusion, b.audio_fusion)


def test_eval_forward_is_deterministic() -> None:
    pixel, frame = _models()
    feats, audio = _inputs(2)
    with torch.no_grad():
        _, a = _run(pixel.eval(), frame.eval(), feats, audio)
        _, b = _run(pixel, frame, feats, audio)
    assert torch.equal(a.pred_logits, b.pred_logits)
    assert torch.equal(a.pred_masks, b.pred_masks)
    assert torch.equal(a.frame_queries, b.frame_queries)


def test_gradients_reach_every_parameter() -> None:
    pixel, frame = _models()
    pixel.train()
    frame.train()
    pd, fd = _run(pixel, frame, *_inputs(2), layers=3)
    loss = (
        fd.pred_logits.square().mean()
        + fd.pred_masks.square().mean()
        + fd.frame_queries.square().mean()
        + pd.stride4_features.square().mean()
    )
    loss.backward()
    for module in (pixel, frame):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pixel_decoder_is_fp32_under_fp16_autocast_and_bf16_under_bf16(dtype) -> None:
    # fp16: the official float32 island (deformable attention overflows fp16); bf16 has
    # float32's range and runs on the tensor cores (accuracy measured: docs/gpu.md)
    pixel, frame = _models()
    feats, audio = _inputs(1)
    with torch.no_grad():
        want = pixel.eval()(feats)
        with torch.autocast("cpu", dtype=dtype):
            pd = pixel.eval()([f.to(dtype) for f in feats])
    expected = torch.float32 if dtype == torch.float16 else torch.bfloat16
    assert pd.mask_features.dtype == expected
    assert all(m.dtype == expected for m in pd.multi_scale_features)
    scale = want.mask_features.abs().max()
    assert (pd.mask_features.float() - want.mask_features).abs().max() < 0.05 * scale


def test_bad_inputs_are_reported() -> None:
    pixel, frame = _models()
    feats, audio = _inputs(2)
    with pytest.raises(ValueError, match="feature maps"):
        pixel(feats[1:])
    with pytest.raises(ValueError, match="stride ascending"):
        pixel(feats[::-1])
    named = dict(zip(("res2", "res3", "res4", "res5"), feats))
    torch.testing.assert_close(pixel(named).mask_features, pixel(feats).mask_features)
    pd = pixel(feats)
    with pytest.raises(ValueError, match="one per frame"):
        frame(pd.multi_scale_features, pd.mask_features, audio[:1])
    with pytest.raises(ValueError, match="num_frame_query_layers"):
        frame(pd.multi_scale_features, pd.mask_features, audio, num_frame_query_layers=9)


def test_attention_mask_from_predicted_masks() -> None:
    _, frame = _models()
    n = 2
    logits = torch.randn(n, FQ, 4, 4)
    logits[1, 2] = -1.0  # empty mask at this level
    blocked = frame.attention_mask(logits)
    want = (logits.sigmoid() < 0.5).flatten(2)
    want[1, 2] = False  # empty masks attend everywhere
    assert blocked.shape == (n * HEADS, FQ, 16)
    assert want[0].any() and not want[1, 2].any()
    for i in range(n):
        for head in range(HEADS):
            assert torch.equal(blocked[i * HEADS + head], want[i])


def test_last_layer_only_masks_match_all_layer_masks() -> None:
    pixel, frame = _models()
    feats, audio = _inputs(3)
    with torch.no_grad():
        pd = pixel.eval()(feats)
        full = frame.eval()(pd.multi_scale_features, pd.mask_features, audio)
        fast = frame(pd.multi_scale_features, pd.mask_features, audio, all_layer_masks=False)
    assert fast.pred_masks.shape == (1, *full.pred_masks.shape[1:])
    torch.testing.assert_close(fast.pred_masks[-1], full.pred_masks[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.pred_logits, full.pred_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.frame_queries, full.frame_queries, atol=1e-5, rtol=1e-5)
