"""The optional consensus re-read of the video queries (AVISMConfig.consensus_refine).

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


def _model(consensus: bool = True):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", per_frame_mask_embed=True, consensus_refine=consensus, **SMALL))


def _wake(model) -> None:
    """Give the zero-initialised consensus map weights, so that frames depend on each other."""
    gen = torch.Generator().manual_seed(1)
    proj = model.video_module.refine_consensus
    with torch.no_grad():
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=gen) * 0.5)
        proj.bias.copy_(torch.randn(proj.bias.shape, generator=gen) * 0.5)


def test_only_extra_weights_and_needs_its_parts():
    plain, model = _model(False), _model()
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"video_module.refine_consensus.weight", "video_module.refine_consensus.bias"}
    assert plain.video_module.refine_consensus is None
    with pytest.raises(ValueError, match="consensus_refine needs per_frame_mask_embed"):
        build_avism(get_preset("avism_tiny", consensus_refine=True, **SMALL))
    with pytest.raises(ValueError, match="excludes recurrent_refine"):
        build_avism(get_preset("avism_tiny", per_frame_mask_embed=True, recurrent_refine=True, consensus_refine=True, **SMALL))


@pytest.mark.parametrize("training", [True, False])
def test_a_fresh_model_computes_what_one_re_read_computes(training: bool):
    plain, model = _model(False), _model()
    model.load_state_dict(plain.state_dict(), strict=False)  # same weights, the map at zero
    plain.train(training)
    model.train(training)
    lv, cq, n, t, fq, c = 2, 3, 2, 4, 4, 16
    decoded, fused = torch.randn(lv, cq, n, c), torch.randn(t, fq, n, c)
    want = plain.video_module._mask_embed(decoded, fused, 1, n)
    torch.testing.assert_close(model.video_module._mask_embed(decoded, fused, 1, n), want, rtol=1e-5, atol=1e-6)


def test_every_frame_reads_its_own_tokens_and_the_whole_video_in_any_order():
    model = _model().eval()
    _wake(model)
    vm = model.video_module
    lv, cq, n, t, fq, c = 2, 3, 2, 5, 4, 16
    decoded, fused = torch.randn(lv, cq, n, c), torch.randn(t, fq, n, c)
    base = vm._mask_embed(decoded, fused, 1, n)  # (1, 1, N, cQ, T, Cm)
    moved = fused.clone()
    moved[3] = torch.randn(fq, n, c)
    changed = vm._mask_embed(decoded, moved, 1, n)
    for frame in range(t):  # one frame's tokens reach every frame, earlier ones too
        assert not torch.allclose(base[..., frame, :], changed[..., frame, :]), frame
    # the frames' order does not matter: reversed in, reversed out
    flipped = vm._mask_embed(decoded, fused.flip(0), 1, n)
    torch.testing.assert_close(flipped, base.flip(-2), rtol=1e-5, atol=1e-6)


def test_training_forward_loss_and_gradients_reach_the_map():
    model = _model()
    _wake(model)
    assert_training_reaches(model, "video_module.refine_consensus")


@pytest.mark.parametrize("streaming", [False, True])
def test_inference_is_the_same_however_frames_are_cut_into_blocks(streaming: bool):
    model = _model().eval()
    _wake(model)
    predictions_for_block_sizes(model, streaming)
