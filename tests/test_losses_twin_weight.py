"""`twin_weight`: extra mask-BCE weight on the pixels of same-class other targets."""

import pytest
import torch
import torch.nn.functional as F

from avis.engine.build import build_criterion
from avis.engine.config import TrainConfig
from avis.losses import AVISMCriterion
from avis.losses.criterion import same_class_others
from avis.losses.matcher import MatchTarget

K, T, H, W = 3, 2, 8, 8


def boxes(*rows: tuple[int, int]) -> torch.Tensor:
    """One (T, H, W) mask per (top, bottom) row range, full width, in every frame."""
    masks = torch.zeros(len(rows), T, H, W, dtype=torch.bool)
    for n, (top, bottom) in enumerate(rows):
        masks[n, :, top:bottom] = True
    return masks


def test_same_class_others_is_the_union_of_the_other_same_class_masks():
    masks = boxes((0, 2), (2, 4), (4, 6), (6, 8))
    target = MatchTarget(labels=torch.tensor([1, 1, 1, 2]), masks=masks)
    others = same_class_others(target, K)
    assert torch.equal(others[0], (masks[1] | masks[2]).float())
    assert torch.equal(others[1], (masks[0] | masks[2]).float())
    assert torch.equal(others[3], torch.zeros(T, H, W))  # alone in its class
    # overlapping twins: still a {0, 1} map
    overlap = MatchTarget(labels=torch.tensor([0, 0, 0]), masks=boxes((0, 4), (2, 6), (3, 8)))
    assert same_class_others(overlap, K).max() == 1.0
    # the official quirk's no-object label (K) has no class, so no twins
    quirk = MatchTarget(labels=torch.tensor([K, K]), masks=boxes((0, 2), (2, 4)))
    assert same_class_others(quirk, K).sum() == 0
    empty = MatchTarget(labels=torch.zeros(0, dtype=torch.int64), masks=torch.zeros(0, T, H, W))
    assert same_class_others(empty, K).shape == (0, T, H, W)


def one_item(labels):
    """Two targets, query 0 <-> target 0, query 1 <-> target 1; query 0 covers both targets."""
    masks = boxes((0, 3), (4, 7))
    logits = torch.full((1, 2, K + 1), -5.0)
    pred = torch.full((1, 2, T, H, W), -4.0)
    pred[0, 0, :, 0:7] = 4.0  # the union of the two targets: wrong on target 1's rows
    pred[0, 1, :, 4:7] = 4.0
    matches = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    return logits, pred, [MatchTarget(labels=torch.tensor(labels), masks=masks)], matches


@pytest.mark.parametrize("weight", [0.5, 4.0])
def test_dense_bce_weighs_the_twins_pixels_by_one_plus_w(weight):
    logits, pred, items, matches = one_item([1, 1])
    plain = AVISMCriterion(K, num_points=None).set_losses(logits, pred, items, matches, 2.0)
    twin = AVISMCriterion(K, num_points=None, twin_weight=weight)
    weighted = twin.set_losses(logits, pred, items, matches, 2.0)
    assert torch.equal(weighted[0], plain[0]) and torch.equal(weighted[2], plain[2])  # CE, dice
    # the expected extra: w * BCE on the other twin's pixels, per mask mean, / num_masks
    bce = F.binary_cross_entropy_with_logits(
        pred[0], items[0].masks.float(), reduction="none"
    )  # (2, T, H, W)
    others = torch.stack([items[0].masks[1], items[0].masks[0]]).float()
    extra = (weight * bce * others).flatten(1).mean(1).sum() / 2.0
    assert torch.allclose(weighted[1], plain[1] + extra)
    assert weighted[1] > plain[1]  # query 0 covers target 1: it costs more


def test_no_twins_no_change_in_dense_and_point_modes():
    logits, pred, items, matches = one_item([1, 2])  # different classes
    for num_points in (None, 24):
        torch.manual_seed(0)
        plain = AVISMCriterion(K, num_points=num_points).set_losses(logits, pred, items, matches, 2.0)
        torch.manual_seed(0)
        twin = AVISMCriterion(K, num_points=num_points, twin_weight=3.0)
        weighted = twin.set_losses(logits, pred, items, matches, 2.0)
        for a, b in zip(plain, weighted):
            assert torch.equal(a, b)


def test_point_mode_samples_the_weights_at_the_same_points():
    logits, pred, items, matches = one_item([1, 1])
    torch.manual_seed(0)
    plain = AVISMCriterion(K, num_points=40).set_losses(logits, pred, items, matches, 2.0)
    torch.manual_seed(0)
    weighted = AVISMCriterion(K, num_points=40, twin_weight=3.0).set_losses(
        logits, pred, items, matches, 2.0
    )
    assert torch.equal(plain[2], weighted[2])  # same points: same dice
    assert weighted[1] > plain[1]


def test_config_reaches_the_criterion_and_rejects_negative_weights():
    cfg = TrainConfig()
    assert build_criterion(cfg, K).twin_weight == 0.0  # off by default
    cfg.loss.twin_weight = 2.0
    assert build_criterion(cfg, K).twin_weight == 2.0
    with pytest.raises(ValueError, match="twin_weight"):
        AVISMCriterion(K, twin_weight=-1.0)
