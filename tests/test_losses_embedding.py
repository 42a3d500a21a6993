"""The instance-embedding option: a per-pixel embedding head and its discriminative loss.

Letters: T frames, E embedding size, P grid cells, n instances, B clips.
"""

import sys
from pathlib import Path

import pytest
import torch

from avis.engine.build import build_criterion
from avis.engine.config import EMBED_SCOPES as CONFIG_SCOPES
from avis.engine.config import TrainConfig
from avis.errors import DataError
from avis.losses.embedding import (
    EMBED_SCOPES,
    PULL_MARGIN,
    PUSH_MARGIN,
    clip_parts,
    discriminative_loss,
    discriminative_parts,
)
from avis.models.avism import build_avism
from avis.models.config import get_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, forward_and_loss  # noqa: E402

T, P = 2, 6


def two_instances() -> torch.Tensor:
    """(n=2, T, P): instance 0 on cells 0-2, instance 1 on cells 3-5, in every frame."""
    masks = torch.zeros(2, T, P)
    masks[0, :, :3] = 1.0
    masks[1, :, 3:] = 1.0
    return masks


def test_separated_tight_clusters_cost_nothing():
    embed = torch.zeros(T, 2, P)
    embed[:, 0, 3:] = 2 * PUSH_MARGIN + 0.1  # instance 1 sits just beyond the push distance
    embed[:, 1, :3] += 0.3  # within the pull margin of instance 0's mean
    parts = discriminative_parts(embed, two_instances())
    assert float(parts.pull) == pytest.approx(0.0, abs=1e-6)
    assert float(parts.push) == pytest.approx(0.0, abs=1e-6)
    assert (parts.num_instances, parts.num_pairs) == (2 * T, 2 * T)  # ordered pairs per frame


def test_identical_embeddings_pay_the_full_push_per_ordered_pair():
    """Look-alike instances with the same features: every ordered pair of a frame pays
    (2 * push margin)^2, and the pull term is zero (each instance is one point)."""
    parts = discriminative_parts(torch.zeros(T, 3, P), two_instances())
    assert float(parts.push) == pytest.approx(2 * T * (2 * PUSH_MARGIN) ** 2, rel=1e-4)  # sqrt eps
    assert float(parts.pull) == pytest.approx(0.0, abs=1e-6)
    assert float(discriminative_loss([parts])) == pytest.approx((2 * PUSH_MARGIN) ** 2, rel=1e-4)


def test_pull_matches_the_formula_with_soft_weights():
    embed = torch.zeros(1, 1, 4)
    embed[0, 0] = torch.tensor([0.0, 0.0, 4.0, 9.0])  # cell 3 is outside the instance
    masks = torch.tensor([[[1.0, 1.0, 0.5, 0.0]]])  # (n=1, T=1, P=4), mass 2.5
    mean = (0.0 + 0.0 + 0.5 * 4.0) / 2.5
    dists = [mean, mean, 4.0 - mean]
    expected = sum(
        w * max(d - PULL_MARGIN, 0.0) ** 2 for w, d in zip([1.0, 1.0, 0.5], dists)
    ) / 2.5
    parts = discriminative_parts(embed, masks)
    assert float(parts.pull) == pytest.approx(expected, rel=1e-5)
    assert parts.num_pairs == 0 and float(parts.push) == 0.0


def test_absent_instances_do_not_count_and_empty_clips_keep_the_graph():
    masks = two_instances()
    masks[1, 1] = 0.0  # instance 1 absent in frame 1
    masks[0, 0] = 0.0
    masks[0, 0, 0] = 0.3  # under half a cell: absent in frame 0
    parts = discriminative_parts(torch.zeros(T, 2, P), masks)
    assert (parts.num_instances, parts.num_pairs) == (2, 0)  # one instance in each frame
    embed = torch.zeros(T, 2, P, requires_grad=True)
    empty = discriminative_parts(embed, torch.zeros(0, T, P))
    loss = discriminative_loss([empty])
    loss.backward()
    assert float(loss.detach()) == 0.0 and embed.grad is not None
    with pytest.raises(ValueError):
        discriminative_loss([])


def test_descent_separates_look_alikes_that_start_identical():
    """Free embeddings of two instances that start at almost the same point: gradient descent
    on the loss moves their means at least 2 * push margin apart and tightens each one."""
    gen = torch.Generator().manual_seed(0)
    embed = (torch.randn(T, 4, P, generator=gen) * 0.01).requires_grad_()
    opt = torch.optim.SGD([embed], lr=0.05)
    masks = two_instances()
    for _ in range(300):
        opt.zero_grad()
        discriminative_loss([discriminative_parts(embed, masks)]).backward()
        opt.step()
    with torch.no_grad():
        mean0, mean1 = embed[..., :3].mean(-1), embed[..., 3:].mean(-1)  # (T, E)
        assert ((mean0 - mean1).norm(dim=-1) >= 2 * PUSH_MARGIN - 1e-3).all()
        assert float(discriminative_loss([discriminative_parts(embed, masks)])) < 1e-4


def swapping_look_alikes() -> torch.Tensor:
    """(T, E=1, P) embeddings of two_instances() that trade places between the frames: in each
    frame the two are 2 * push margin + 0.1 apart and tight, but instance 0's value in frame 0
    is instance 1's in frame 1."""
    far = 2 * PUSH_MARGIN + 0.1
    embed = torch.zeros(T, 1, P)
    embed[0, 0, 3:] = far
    embed[1, 0, :3] = far
    return embed


def test_frame_scope_lets_look_alikes_swap_and_clip_scope_does_not():
    """What the clip scope adds: an instance must keep its embedding from frame to frame."""
    embed, masks = swapping_look_alikes(), two_instances()
    per_frame = discriminative_parts(embed, masks)
    assert float(discriminative_loss([per_frame])) == pytest.approx(0.0, abs=1e-6)
    whole = clip_parts(embed, masks)
    assert (whole.num_instances, whole.num_pairs) == (2, 2)  # one cluster per instance
    # both clip means sit at far / 2: each pixel is far / 2 from its mean, the means coincide
    far = 2 * PUSH_MARGIN + 0.1
    assert float(whole.pull) == pytest.approx(2 * (far / 2 - PULL_MARGIN) ** 2, rel=1e-4)
    assert float(whole.push) == pytest.approx(2 * (2 * PUSH_MARGIN) ** 2, rel=1e-4)
    # an embedding that keeps each instance's value in both frames costs nothing in either scope
    steady = torch.zeros(T, 1, P)
    steady[:, 0, 3:] = far
    for parts in (discriminative_parts(steady, masks), clip_parts(steady, masks)):
        assert float(discriminative_loss([parts])) == pytest.approx(0.0, abs=1e-6)


def test_clip_scope_is_the_frame_scope_of_the_frames_side_by_side():
    gen = torch.Generator().manual_seed(1)
    embed, masks = torch.randn(3, 4, 5, generator=gen), torch.rand(2, 3, 5, generator=gen)
    whole = clip_parts(embed, masks)
    side_by_side = discriminative_parts(
        torch.cat(list(embed), dim=-1)[None], torch.cat(list(masks.transpose(0, 1)), dim=-1)[:, None]
    )
    assert float(whole.pull) == pytest.approx(float(side_by_side.pull), rel=1e-5)
    assert float(whole.push) == pytest.approx(float(side_by_side.push), rel=1e-5)


def test_loss_config_scope_reaches_the_criterion():
    cfg = TrainConfig()
    assert build_criterion(cfg, 3).embed_parts is discriminative_parts  # the default
    cfg.loss.embed_scope = "clip"
    assert build_criterion(cfg, 3).embed_parts is clip_parts
    cfg.loss.embed_scope = "video"
    with pytest.raises(ValueError, match="embed_scope"):
        build_criterion(cfg, 3)
    with pytest.raises(DataError, match="embed_scope"):
        cfg.validate()  # refused before a run starts


def test_config_scopes_are_the_losses_scopes():
    assert set(CONFIG_SCOPES) == set(EMBED_SCOPES)


def _model(dim: int):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", instance_embed_dim=dim, **SMALL))


def test_model_option_off_by_default_and_only_extra_weights():
    plain, embed = _model(0), _model(5)
    extra = set(embed.state_dict()) - set(plain.state_dict())
    assert extra == {"instance_embed.weight", "instance_embed.bias"}
    assert set(plain.state_dict()) <= set(embed.state_dict())
    out, result = forward_and_loss(plain.train())
    assert out.pixel_embed is None and "embed" not in result.terms


def test_training_output_and_loss_term_with_gradients():
    model = _model(5).train()
    out, result = forward_and_loss(model, b=2, t=3)
    assert out.pixel_embed.shape == (2, 2, 3, 5, 8, 8)  # (levels, B, T, E, Hm, Wm)
    assert "embed" in result.terms and float(result.terms["embed"].detach()) > 0
    result.terms["embed"].backward()  # the embedding term alone
    assert model.instance_embed.weight.grad is not None
    assert float(model.instance_embed.weight.grad.abs().sum()) > 0
    # it reaches the mask features of both levels
    for conv in (model.pixel_decoder.mask_features, model.video_module.avism_mask_features):
        assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0


def test_loss_config_weight_reaches_the_criterion():
    cfg = TrainConfig()
    cfg.loss.embed_weight = 0.25
    assert build_criterion(cfg, 3).term_weight("embed") == 0.25
