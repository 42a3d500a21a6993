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


def test_query_anchors_and_mask_centroids():
    from avis.losses.matcher import mask_centroids
    from avis.models.position import query_anchors

    anchors = query_anchors(10)
    assert anchors.shape == (10, 2) and len({tuple(a) for a in anchors.tolist()}) == 10
    assert anchors.min() > 0 and anchors.max() < 1
    assert torch.allclose(anchors[:5, 1], torch.full((5,), 0.25))  # 5 x 2 grid, row by row
    assert query_anchors(100).shape == (100, 2)
    masks = torch.zeros(3, 2, 8, 16, dtype=torch.bool)
    masks[0, 0, 2:4, 0:4] = True  # x centre 2/16, y centre 3/8
    masks[1, 1, 6:8, 12:16] = True  # only in the second frame
    c = mask_centroids(masks)
    assert torch.allclose(c[0], torch.tensor([2 / 16, 3 / 8]))
    assert torch.allclose(c[1], torch.tensor([14 / 16, 7 / 8]))
    assert torch.allclose(c[2], torch.tensor([0.5, 0.5]))  # empty target: the frame centre


def test_anchor_cost_breaks_the_tie_between_look_alike_targets():
    # two queries predict the same union mask of two identical targets (left, right): the
    # plain matcher's costs tie; with anchors the left-anchored query gets the left target
    h, w = 8, 16
    left = torch.zeros(1, h, w, dtype=torch.bool)
    left[:, 3:5, 2:4] = True
    right = torch.zeros(1, h, w, dtype=torch.bool)
    right[:, 3:5, 12:14] = True
    union_logits = torch.where(left | right, 5.0, -5.0).float()  # (1, h, w)
    masks = union_logits.expand(2, 1, h, w)[None]  # (I=1, Q=2, T=1, h, w)
    logits = torch.zeros(1, 2, 3)
    # the target order is the right one first: a plain tie keeps index order
    target = MatchTarget(labels=torch.tensor([0, 0]), masks=torch.stack([right, left]))
    plain = HungarianMatcher(num_points=None).cost_matrices(logits, masks, [target])[0]
    assert torch.allclose(plain[:, 0], plain[:, 1])
    matcher = HungarianMatcher(num_points=None, anchor_cost=1.0)
    pred_idx, tgt_idx = matcher(logits, masks, [target])[0]
    # query anchors of Q = 2: (0.25, 0.5) and (0.75, 0.5): query 0 is the left one
    assigned = dict(zip(pred_idx.tolist(), tgt_idx.tolist()))
    assert assigned == {0: 1, 1: 0}
    costs = matcher.cost_matrices(logits, masks, [target])[0]
    assert costs[0, 1] < costs[0, 0] and costs[1, 0] < costs[1, 1]
