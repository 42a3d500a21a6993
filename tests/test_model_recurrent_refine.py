"""The optional recurrent per-frame re-read of the video queries (AVISMConfig.recurrent_refine).

Letters: B clips, T frames, cQ video queries, fQ frame queries, C hidden size, Cm mask size.
"""

import sys
from pathlib import Path

import pytest
import torch

from avis.models.avism import build_avism
from avis.models.config import get_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, assert_training_reaches, predictions_for_block_sizes  # noqa: E402


def _model(recurrent: bool = True, **kw):
    torch.manual_seed(0)
    cfg = get_preset(
        "avism_tiny", per_frame_mask_embed=True, recurrent_refine=recurrent, **SMALL, **kw
    )
    return build_avism(cfg)


def _wake(model) -> None:
    """Give the zero-initialised carry weights that make frames depend on each other."""
    gen = torch.Generator().manual_seed(1)
    carry = model.video_module.refine_carry
    with torch.no_grad():
        carry.weight.copy_(torch.randn(carry.weight.shape, generator=gen) * 0.5)
        carry.bias.copy_(torch.randn(carry.bias.shape, generator=gen) * 0.5)


def test_off_by_default_only_extra_weights_and_needs_per_frame_embeddings():
    plain = _model(recurrent=False)
    model = _model()
    assert not plain.video_module.recurrent_refine and model.video_module.recurrent_refine
    assert not build_avism(get_preset("avism_tiny", **SMALL)).video_module.recurrent_refine
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"video_module.refine_carry.weight", "video_module.refine_carry.bias"}
    with pytest.raises(ValueError, match="per_frame_mask_embed"):
        build_avism(get_preset("avism_tiny", recurrent_refine=True, **SMALL))


@pytest.mark.parametrize("training", [True, False])
def test_a_fresh_model_computes_what_independent_re_reads_compute(training: bool):
    plain, model = _model(recurrent=False), _model()
    model.load_state_dict(plain.state_dict(), strict=False)  # same weights, carry at zero
    plain.train(training)
    model.train(training)
    lv, cq, n, t, fq, c = 2, 3, 2, 4, 4, 16
    decoded = torch.randn(lv, cq, n, c)
    fused = torch.randn(t, fq, n, c)
    want = plain.video_module._mask_embed(decoded, fused, 1, n)
    got = model.video_module._mask_embed(decoded, fused, 1, n)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_each_frame_reads_its_own_tokens_and_what_came_before():
    model = _model().eval()
    _wake(model)
    vm = model.video_module
    lv, cq, n, t, fq, c = 2, 3, 2, 5, 4, 16
    decoded = torch.randn(lv, cq, n, c)
    fused = torch.randn(t, fq, n, c)
    base = vm._mask_embed(decoded, fused, 1, n)  # (1, 1, N, cQ, T, Cm)
    moved = fused.clone()
    moved[2] = torch.randn(fq, n, c)
    changed = vm._mask_embed(decoded, moved, 1, n)
    for frame in range(t):  # frames before 2 do not see it; 2 and every later frame do
        same = torch.equal(base[..., frame, :], changed[..., frame, :])
        assert same == (frame < 2), frame
    # the same frames cut short give the same embeddings: frame t depends on frames <= t only
    head = vm._mask_embed(decoded, fused[:3], 1, n)
    torch.testing.assert_close(head, base[..., :3, :])
    # training refines every decoder layer; its last layer is what inference computes
    train = vm.train()._mask_embed(decoded, fused, 1, n)
    assert train.shape == (lv, 1, n, cq, t, 16)
    torch.testing.assert_close(train[-1:], base)


def test_training_forward_loss_and_gradients_reach_the_carry():
    model = _model()
    _wake(model)
    assert_training_reaches(model, "video_module.refine_carry")


@pytest.mark.parametrize("streaming", [False, True])
def test_inference_is_the_same_however_frames_are_cut_into_blocks(streaming: bool):
    model = _model().eval()
    _wake(model)
    predictions_for_block_sizes(model, streaming)
