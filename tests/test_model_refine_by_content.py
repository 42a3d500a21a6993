"""The optional slot-free per-frame re-read of the video queries (AVISMConfig.refine_by_content).

Letters: T frames, cQ video queries, fQ frame queries, M sequences, C hidden size.
"""

import sys
from pathlib import Path

import pytest
import torch

from avis.models.avism import build_avism
from avis.models.config import get_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, forward_and_loss  # noqa: E402


def _model(by_content: bool = True):
    torch.manual_seed(0)
    cfg = get_preset("avism_tiny", per_frame_mask_embed=True, refine_by_content=by_content, **SMALL)
    return build_avism(cfg)


def _reads(model, perm: torch.Tensor | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    vm = model.video_module
    cq, m, fq, t, c = vm.num_queries, 2, vm.num_frame_queries, 3, 16
    queries = torch.randn(cq, m, c, generator=gen)  # (cQ, M, C)
    memory = torch.randn(fq, m, t, c, generator=gen)  # (fQ, M, T, C)
    if perm is not None:
        memory = memory[perm]
    return vm._refine_frames(queries, memory)  # (cQ, M, T, C)


def test_off_by_default_no_weights_and_needs_per_frame_embeddings():
    plain, model = _model(by_content=False), _model()
    assert not plain.video_module.refine_by_content and model.video_module.refine_by_content
    assert not build_avism(get_preset("avism_tiny", **SMALL)).video_module.refine_by_content
    assert set(model.state_dict()) == set(plain.state_dict())
    model.load_state_dict(plain.state_dict(), strict=True)  # checkpoints load either way
    with pytest.raises(ValueError, match="per_frame_mask_embed"):
        build_avism(get_preset("avism_tiny", refine_by_content=True, **SMALL))


def test_the_re_read_depends_on_the_tokens_not_on_their_slots():
    """Shuffling which slot holds which token changes nothing by content, and changes the
    re-read when the keys carry the slots' position embeddings (the default)."""
    perm = torch.roll(torch.arange(SMALL["frame_queries"]), 1)
    model, plain = _model().eval(), _model(by_content=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(_reads(model, perm), _reads(model), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(_reads(plain, perm), _reads(plain), atol=1e-4)


def test_trains_end_to_end():
    model = _model().train()
    _, result = forward_and_loss(model)
    assert torch.isfinite(result.total)
    result.total.backward()
    grad = model.video_module.frame_refine.multihead_attn.in_proj_weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.video_module.fq_pos.weight.grad is not None  # still used by the decoder
