"""Hungarian matcher invariants and point sampling."""

import pytest
import torch

from avis.losses.functional import dice_loss, pairwise_dice, pairwise_sigmoid_bce, sigmoid_bce_loss
from avis.losses.matcher import HungarianMatcher, MatchTarget
from avis.losses.points import grid_centre_coords, importance_sampled_coords, point_sample

NUM_CLASSES = 4
STRIDE = 4


def block_masks(num: int, frames: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random masks made of STRIDE x STRIDE blocks: (num, frames, size*STRIDE, size*STRIDE)."""
    coarse = torch.rand(num, frames, size, size, generator=generator) > 0.5
    return coarse.repeat_interleave(STRIDE, -1).repeat_interleave(STRIDE, -2)


def random_item(num_queries, num_targets, frames, size, generator):
    logits = torch.randn(num_queries, NUM_CLASSES + 1, generator=generator)
    masks = torch.randn(num_queries, frames, size, size, generator=generator) * 3
    target = MatchTarget(
        labels=torch.randint(0, NUM_CLASSES, (num_targets,), generator=generator),
        masks=block_masks(num_targets, frames, size, generator),
    )
    return logits, masks, target


@pytest.mark.parametrize("num_points", [None, 64])
@pytest.mark.parametrize("frames", [1, 3])
def test_permuting_predictions_permutes_assignment(num_points, frames):
    gen = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(num_points=num_points)
    logits, masks, target = random_item(7, 4, frames, 4, gen)
    perm = torch.randperm(7, generator=gen)
    torch.manual_seed(1)
    ((src, tgt),) = matcher(logits[None], masks[None], [target])
    torch.manual_seed(1)  # same random points for both calls
    ((src_p, tgt_p),) = matcher(logits[perm][None], masks[perm][None], [target])
    assert len(src) == len(src_p) == 4
    original = dict(zip(tgt.tolist(), src.tolist()))
    permuted = dict(zip(tgt_p.tolist(), perm[src_p].tolist()))
    assert original == permuted


def test_perfect_predictions_get_zero_cost_matches():
    gen = torch.Generator().manual_seed(3)
    frames, size, num_queries = 2, 4, 6
    _, _, target = random_item(num_queries, 3, frames, size, gen)
    slots = torch.tensor([4, 0, 2])  # query that predicts target j perfectly
    logits = torch.full((num_queries, NUM_CLASSES + 1), -20.0)
    logits[:, -1] = 20.0
    masks = torch.full((num_queries, frames, size, size), -30.0)
    coarse = target.masks[:, :, ::STRIDE, ::STRIDE].float()
    for j, q in enumerate(slots):
        logits[q] = -20.0
        logits[q, target.labels[j]] = 20.0
        masks[q] = coarse[j] * 60 - 30
    matcher = HungarianMatcher(num_points=None)
    ((src, tgt),) = matcher(logits[None], masks[None], [target])
    assert dict(zip(tgt.tolist(), src.tolist())) == {j: int(q) for j, q in enumerate(slots)}
    cost = matcher.cost_matrices(logits[None], masks[None], [target])[0]
    mask_cost = cost[slots, torch.arange(3)] + matcher.cost_class  # remove the -1 class term
    assert torch.allclose(mask_cost, torch.zeros(3), atol=1e-5)


def test_empty_targets_and_more_targets_than_queries():
    gen = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(num_points=32)
    logits, masks, empty = random_item(5, 0, 1, 4, gen)
    logits2, masks2, many = random_item(5, 8, 1, 4, gen)
    matches = matcher(torch.stack([logits, logits2]), torch.stack([masks, masks2]), [empty, many])
    assert [len(m[0]) for m in matches] == [0, 5]
    assert len(set(matches[1][1].tolist())) == 5


def test_point_sample_reads_cell_centres_exactly():
    grid = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    coords = grid_centre_coords(3, 4)
    values = point_sample(grid, coords[None])
    assert torch.allclose(values.flatten(), grid.flatten(), atol=1e-5)


def test_importance_sampling_prefers_uncertain_points():
    torch.manual_seed(0)
    logits = torch.full((1, 1, 8, 8), 50.0)
    logits[..., :, :2] = 0.0  # the uncertain band: x in [0, 0.25)
    coords = importance_sampled_coords(
        logits, num_points=40, oversample_ratio=3, importance_ratio=0.75
    )
    assert coords.shape == (1, 40, 2)
    chosen = coords[0, :30, 0]
    assert (chosen < 0.3).float().mean() > 0.9


def test_pairwise_costs_agree_with_losses():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, generator=gen)
    targets = (torch.rand(2, 20, generator=gen) > 0.5).float()
    bce = pairwise_sigmoid_bce(logits, targets)
    dice = pairwise_dice(logits, targets)
    for q in range(3):
        for n in range(2):
            assert bce[q, n] == pytest.approx(
                float(sigmoid_bce_loss(logits[q : q + 1], targets[n : n + 1], 1)), rel=1e-5
            )
            assert dice[q, n] == pytest.approx(
                float(dice_loss(logits[q : q + 1], targets[n : n + 1], 1)), rel=1e-5
            )
