"""Video module: window masks against brute force, encoders against global masked attention,
batching of several clips, gradients, determinism.

Letters: T frames, Tp padded frames, W window, fQ frame queries, N sequences, C channels.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from avis.models.video_module import SHIFT_MASK_VALUE, VideoModule
from avis.models.windows import shifted_window_blocked, window_layout

C, FQ, CQ, K, D, HEADS = 16, 3, 4, 5, 7, 2


def _module(window: int, enc_layers: int = 3, dec_layers: int = 2) -> VideoModule:
    torch.manual_seed(0)
    vm = VideoModule(
        frame_dim=C,
        hidden_dim=C,
        num_heads=HEADS,
        dim_feedforward=32,
        num_frame_queries=FQ,
        num_queries=CQ,
        enc_layers=enc_layers,
        dec_layers=dec_layers,
        window_size=window,
        num_classes=K,
        audio_dim=D,
        mask_in_dim=C,
        mask_dim=C,
    )
    # random biases/norms so that nothing is trivially symmetric
    with torch.no_grad():
        for p in vm.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vm


def _brute_shift_blocked(num_frames: int, window: int) -> torch.Tensor:
    """Blocked pairs of shifted windows by definition, in the original frame order.

    Returns (Tp, Tp) with values 0 = allowed, 1 = blocked inside a window, 2 = other window.
    """
    tp = -(-num_frames // window) * window
    shift = -(-window // 2)
    out = torch.zeros(tp, tp, dtype=torch.long)
    for i, j in itertools.product(range(tp), range(tp)):
        pi, pj = (i + shift) % tp, (j + shift) % tp  # positions after rolling
        if pi // window != pj // window:
            out[i, j] = 2
            continue
        padded_i, padded_j = i >= num_frames, j >= num_frames
        wrapped_i, wrapped_j = pi < shift, pj < shift
        if padded_i or padded_j or wrapped_i != wrapped_j:
            out[i, j] = 1
    return out


def _brute_plain_blocked(num_frames: int, window: int) -> torch.Tensor:
    tp = -(-num_frames // window) * window if window else num_frames
    out = torch.zeros(tp, tp, dtype=torch.long)
    for i, j in itertools.product(range(tp), range(tp)):
        if window and i // window != j // window:
            out[i, j] = 2
        elif j >= num_frames:
            out[i, j] = 1
    return out


@pytest.mark.parametrize(
    "num_frames,window", [(t, w) for t in range(1, 14) for w in (1, 2, 3, 4, 5, 6)]
)
def test_shifted_mask_matches_brute_force(num_frames: int, window: int) -> None:
    layout = window_layout(num_frames, window)
    blocked = shifted_window_blocked(layout)  # (Nw, W, W) in rolled order
    brute = _brute_shift_blocked(num_frames, window)
    tp = layout.padded_frames
    for i, j in itertools.product(range(tp), range(tp)):
        pi, pj = (i + layout.shift) % tp, (j + layout.shift) % tp
        if brute[i, j] == 2:
            continue
        wi = pi // window
        assert bool(blocked[wi, pi % window, pj % window]) == bool(brute[i, j] == 1), (i, j)


def _additive(code: torch.Tensor, fq_q: int, fq_k: int, inside_value: float) -> torch.Tensor:
    code = code.repeat_interleave(fq_q, 0).repeat_interleave(fq_k, 1)
    mask = torch.zeros(code.shape)
    mask[code == 1] = inside_value
    mask[code == 2] = float("-inf")
    return mask


def _brute_encoders(vm: VideoModule, frames: torch.Tensor, sound: torch.Tensor, num_frames: int):
    """Global attention over all Tp*fQ tokens with window structure expressed as a mask."""
    w = vm.window_size
    tp = frames.shape[0]
    x = frames.flatten(0, 1)  # (Tp*fQ, N, C)
    for i, (attn, ffn) in enumerate(zip(vm.enc_self_attn, vm.enc_ffn)):
        if w and i % 2 == 1 and not vm.training:
            mask = _additive(_brute_shift_blocked(num_frames, w), FQ, FQ, SHIFT_MASK_VALUE)
        else:
            mask = _additive(_brute_plain_blocked(num_frames, w), FQ, FQ, float("-inf"))
        x = ffn(attn(x, attn_mask=mask))
    a = sound.expand(tp, FQ, *sound.shape[2:]).flatten(0, 1)
    for i, (attn, ffn) in enumerate(zip(vm.enc_av_cross_attn, vm.enc_av_ffn)):
        if w and i % 2 == 1:
            mask = _additive(_brute_shift_blocked(num_frames, w), FQ, FQ, SHIFT_MASK_VALUE)
        else:
            mask = _additive(_brute_plain_blocked(num_frames, w), FQ, FQ, float("-inf"))
        a = ffn(attn(a, x, memory_mask=mask))
    return x.view(tp, FQ, *x.shape[1:]), a.view(tp, FQ, *a.shape[1:])


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "num_frames,window", [(5, 6), (12, 6), (13, 6), (7, 3), (9, 4), (6, 1), (8, 0), (4, 2)]
)
def test_encoders_match_global_masked_attention(
    num_frames: int, window: int, training: bool
) -> None:
    vm = _module(window, enc_layers=4)
    vm.train(training)
    layout = window_layout(num_frames, window)
    tp, n = layout.padded_frames, 2
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(tp, FQ, n, C, generator=g)
    sound = torch.randn(tp, 1, n, C, generator=g)
    frames[num_frames:] = 0
    sound[num_frames:] = 0
    with torch.no_grad():
        enc = vm._encode_frames(frames, layout)
        av = vm._encode_audio(sound, enc, layout)
        ref_enc, ref_av = _brute_encoders(vm, frames, sound, num_frames)
    # padded tokens included: the finite -1000 mask makes them well defined
    torch.testing.assert_close(enc, ref_enc, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(av.expand_as(ref_av), ref_av, atol=2e-5, rtol=1e-5)


def test_no_nan_with_padding_in_eval() -> None:
    vm = _module(6).eval()
    with torch.no_grad():
        out = vm(torch.randn(1, 5, FQ, C), torch.randn(1, 5, D))
    assert torch.isfinite(out.pred_logits).all() and torch.isfinite(out.enc_frame_tokens).all()


@pytest.mark.parametrize("training", [False, True])
def test_several_clips_equal_one_by_one(training: bool) -> None:
    """B clips in one call give what each clip gives alone (the official code cannot)."""
    vm = _module(3).train(training)
    lf, b, t = 2, 3, 7
    g = torch.Generator().manual_seed(2)
    fq = torch.randn(lf, b * t, FQ, C, generator=g)
    audio = torch.randn(b, t, D, generator=g)
    with torch.no_grad():
        together = vm(fq, audio)
        for i in range(b):
            alone = vm(fq[:, i * t : (i + 1) * t], audio[i : i + 1])
            torch.testing.assert_close(
                together.pred_logits[:, :, i], alone.pred_logits[:, :, 0], atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                together.pred_mask_embed[:, :, i],
                alone.pred_mask_embed[:, :, 0],
                atol=1e-5,
                rtol=1e-5,
            )
            torch.testing.assert_close(
                together.pred_fq_embed[:, i], alone.pred_fq_embed[:, 0], atol=1e-5, rtol=1e-5
            )
    assert together.pred_logits.shape == (2, lf, b, CQ, K + 1)
    assert together.pred_fq_embed.shape == (lf, b, t, FQ, C)


def test_audio_matters_and_is_per_clip() -> None:
    vm = _module(3).eval()
    fq = torch.randn(1, 2 * 4, FQ, C)
    audio = torch.randn(2, 4, D)
    with torch.no_grad():
        base = vm(fq, audio).pred_logits
        audio2 = audio.clone()
        audio2[1] += 1.0
        changed = vm(fq, audio2).pred_logits
    torch.testing.assert_close(base[:, :, 0], changed[:, :, 0])
    assert (base[:, :, 1] - changed[:, :, 1]).abs().max() > 1e-3


def test_gradients_reach_every_parameter() -> None:
    vm = _module(3, enc_layers=2).train()
    out = vm(torch.randn(3, 2 * 5, FQ, C), torch.randn(2, 5, D))
    masks_in = vm.mask_features(torch.randn(10, C, 4, 4))
    loss = sum(
        t.square().mean()
        for t in (
            out.pred_logits,
            out.pred_mask_embed,
            out.pred_fq_embed,
            out.pred_cq_embed,
            masks_in,
        )
    )
    loss.backward()
    missing = [n for n, p in vm.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_is_deterministic_and_shapes() -> None:
    vm = _module(6).eval()
    fq, audio = torch.randn(1, 13, FQ, C), torch.randn(1, 13, D)
    with torch.no_grad():
        a, b = vm(fq, audio), vm(fq, audio)
    assert torch.equal(a.pred_logits, b.pred_logits)
    assert a.enc_frame_tokens.shape == (13, FQ, 1, C)
    assert a.pred_logits.shape == (2, 1, 1, CQ, K + 1)


def test_frame_count_mismatch_is_reported() -> None:
    vm = _module(3)
    with pytest.raises(ValueError, match="B\\*T"):
        vm(torch.randn(1, 6, FQ, C), torch.randn(1, 5, D))
