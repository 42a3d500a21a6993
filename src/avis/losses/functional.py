"""Mask losses and their pairwise (all predictions x all targets) cost forms.

Letters: Q predictions, N targets, M matched pairs, P sampled values per mask (points, or
points x frames for a whole clip). Inputs are mask logits and {0, 1} (or soft) targets.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

DICE_SMOOTH = 1.0  # added to numerator and denominator: an empty target vs an empty prediction = 0


def sigmoid_bce_loss(
    logits: Tensor, targets: Tensor, num_masks: float, weights: Tensor | None = None
) -> Tensor:
    """Mean BCE over the P values of each mask, summed over masks, / num_masks.

    logits, targets (M, P) -> scalar. weights (M, P), optional: each value's BCE is multiplied
    by its weight before the mean (a weight of 1 everywhere is the plain loss).
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is not None:
        loss = loss * weights
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """1 - smoothed Dice of sigmoid(logits) per mask, summed over masks, / num_masks.

    logits, targets (M, P) -> scalar.
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
    return loss.sum() / num_masks


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE of every prediction against every target.

    logits (..., Q, P), targets (..., N, P) -> (..., Q, N); leading dims batch.
    """
    num_values = logits.shape[-1]
    pos = F.binary_cross_entropy_with_logits(
        logits, logits.new_ones(()).expand_as(logits), reduction="none"
    )
    neg = F.binary_cross_entropy_with_logits(
        logits, logits.new_zeros(()).expand_as(logits), reduction="none"
    )
    cost = pos @ targets.transpose(-1, -2) + neg @ (1 - targets).transpose(-1, -2)
    return cost / num_values


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every prediction against every target: (..., Q, P), (..., N, P) -> (..., Q, N)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.transpose(-1, -2)
    denominator = probs.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + DICE_SMOOTH) / (denominator + DICE_SMOOTH)
