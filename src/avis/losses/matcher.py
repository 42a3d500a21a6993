"""Hungarian matching between predicted and ground-truth masks (Mask2Former / VITA style).

One matcher serves both levels. An "item" is what is matched independently:
- frame level: one frame (T = 1); predictions are the frame queries of that frame, targets the
  instances sounding in that frame;
- video level: one (frame-query layer, clip) pair; predictions are the video queries with
  masks over all T frames, targets the clip's instances with their masks over all T frames.

Cost = w_class * (-p(target class)) + w_mask * BCE + w_dice * dice, the mask terms computed
on the same points for all predictions and targets of an item (shared over the T frames of a
clip), either `num_points` uniform random points or, with num_points=None, the centres of
the prediction grid (deterministic and exact for small masks).

Optional (an avis option, off by default): ``anchor_cost`` adds w * L1 distance between a fixed
anchor point of each query (`query_anchors`, a grid over the frame) and the target's mask
centroid over the item, in [0, 1] frame coordinates. It breaks the tie that matching cannot
otherwise break: for two look-alike targets a query covering both costs the same against
either, so from one iteration to the next it is told to drop each of them; with anchors it
is consistently given the one nearer its anchor, and queries specialise by place.

Letters: I items, Q predictions per item, K+1 classes incl. no-object, T frames,
Hm x Wm prediction grid, Ht x Wt target grid, n targets of an item, P points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from avis.losses.functional import pairwise_dice, pairwise_sigmoid_bce
from avis.losses.points import grid_centre_coords, point_sample
from avis.models.position import query_anchors


@dataclass
class MatchTarget:
    """The ground truth of one item."""

    labels: Tensor  # (n,) int64 class index; K = no-object (official quirk only)
    masks: Tensor  # (n, T, Ht, Wt) bool or float


Match = tuple[Tensor, Tensor]  # (pred_idx (m,), target_idx (m,)) int64, sorted by pred_idx


def sample_item_points(pred_masks: Tensor, num_points: int | None) -> Tensor | None:
    """One set of random points per item: pred_masks (I, Q, T, Hm, Wm) -> coords (I, P, 2).

    None in dense mode (num_points=None): every cell of the prediction grid is used as is.
    """
    if num_points is None:
        return None
    return torch.rand(pred_masks.shape[0], num_points, 2, device=pred_masks.device)


def sample_target_points(masks: Tensor, coords: Tensor | None, grid: tuple[int, int]) -> Tensor:
    """Target masks (n, T, Ht, Wt) at coords (P, 2) -> (n, T*P) float.

    Dense mode (coords None): the values at the centres of the prediction grid (Hm, Wm).
    """
    num_targets, num_frames = masks.shape[:2]
    if coords is None:
        values = resample_to_grid(masks, grid)  # (n, T, Hm, Wm)
        return values.reshape(num_targets, num_frames * grid[0] * grid[1])
    if num_targets == 0:
        return masks.new_zeros((0, num_frames * coords.shape[0]), dtype=torch.float32)
    flat = masks.float().reshape(1, num_targets * num_frames, *masks.shape[-2:])
    values = point_sample(flat, coords.unsqueeze(0))  # (1, n*T, P)
    return values.reshape(num_targets, -1)


def resample_to_grid(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Masks (..., Ht, Wt) -> float values at the cell centres of a (Hm, Wm) grid (bilinear)."""
    if tuple(masks.shape[-2:]) == tuple(grid):
        return masks.float()
    lead = masks.shape[:-2]
    flat = masks.float().reshape(1, -1, *masks.shape[-2:])
    if flat.shape[1] == 0:
        return masks.new_zeros((*lead, *grid), dtype=torch.float32)
    centres = grid_centre_coords(grid[0], grid[1], masks.device)
    values = point_sample(flat, centres.unsqueeze(0))  # (1, L, Hm*Wm)
    return values.reshape(*lead, *grid)


def mask_centroids(masks: Tensor) -> Tensor:
    """(n, T, H, W) bool/float masks -> (n, 2) (x, y) centroid over all frames, in [0, 1];
    an empty target gets the frame centre."""
    m = masks.float().sum(1)  # (n, H, W)
    h, w = m.shape[-2:]
    total = m.sum((1, 2))  # (n,)
    ys = (torch.arange(h, device=m.device) + 0.5) / h
    xs = (torch.arange(w, device=m.device) + 0.5) / w
    cx = (m.sum(1) * xs).sum(1) / total.clamp_min(1e-6)
    cy = (m.sum(2) * ys).sum(1) / total.clamp_min(1e-6)
    centre = torch.full_like(cx, 0.5)
    empty = total <= 0
    return torch.stack([torch.where(empty, centre, cx), torch.where(empty, centre, cy)], 1)


class HungarianMatcher:
    """Optimal one-to-one assignment of predictions to targets, per item."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int | None = 12544,
        anchor_cost: float = 0.0,
    ) -> None:
        self.cost_class = cost_class
        self.anchor_cost = anchor_cost
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrices(
        self, pred_logits: Tensor, pred_masks: Tensor, targets: list[MatchTarget]
    ) -> list[Tensor]:
        """pred_logits (I, Q, K+1), pred_masks (I, Q, T, Hm, Wm) -> per item a (Q, n) cost."""
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"{pred_logits.shape[0]} prediction items but {len(targets)} targets")
        num_items, num_queries = pred_logits.shape[:2]
        grid = (pred_masks.shape[-2], pred_masks.shape[-1])  # (Hm, Wm)
        probs = pred_logits.float().softmax(-1)  # (I, Q, K+1)
        coords = sample_item_points(pred_masks, self.num_points)  # (I, P, 2) or None
        if coords is None:
            pred_points = pred_masks.float().reshape(num_items, num_queries, -1)  # (I, Q, T*Hm*Wm)
        else:
            flat = pred_masks.float().flatten(1, 2)  # (I, Q*T, Hm, Wm)
            pred_points = point_sample(flat, coords).reshape(
                num_items, num_queries, -1
            )  # (I, Q, T*P)
        # Pad the items' targets to a common count n_max and cost every item at once.
        counts = [len(target.labels) for target in targets]
        n_max = max(counts, default=0)
        num_values = pred_points.shape[-1]
        tgt_points = pred_points.new_zeros((num_items, n_max, num_values))  # (I, n_max, T*P)
        labels = torch.zeros((num_items, n_max), dtype=torch.int64, device=pred_logits.device)
        anchor = None  # (I, Q, n_max) anchor-to-centroid distances, with anchor_cost only
        if self.anchor_cost:
            anchors = query_anchors(num_queries, pred_logits.device)  # (Q, 2)
            anchor = pred_points.new_zeros((num_items, num_queries, n_max))
        for item, target in enumerate(targets):
            if counts[item] and anchor is not None:
                centroids = mask_centroids(target.masks)  # (n, 2)
                anchor[item, :, : counts[item]] = torch.cdist(anchors, centroids, p=1)
            if counts[item]:
                item_coords = None if coords is None else coords[item]
                tgt_points[item, : counts[item]] = sample_target_points(
                    target.masks, item_coords, grid
                )
                labels[item, : counts[item]] = target.labels
        class_cost = -torch.gather(probs, 2, labels[:, None, :].expand(-1, num_queries, -1))
        cost = (
            self.cost_class * class_cost
            + self.cost_mask * pairwise_sigmoid_bce(pred_points, tgt_points)
            + self.cost_dice * pairwise_dice(pred_points, tgt_points)
        )  # (I, Q, n_max)
        if anchor is not None:
            cost = cost + self.anchor_cost * anchor
        return [cost[item, :, : counts[item]] for item in range(num_items)]

    @torch.no_grad()
    def __call__(
        self, pred_logits: Tensor, pred_masks: Tensor, targets: list[MatchTarget]
    ) -> list[Match]:
        """Per item the matched (prediction, target) index pairs, m = min(Q, n) of them."""
        matches = []
        for cost in self.cost_matrices(pred_logits, pred_masks, targets):
            cost = torch.nan_to_num(cost.cpu(), nan=1e8, posinf=1e8, neginf=-1e8)
            pred_idx, tgt_idx = linear_sum_assignment(cost.numpy())
            matches.append(
                (
                    torch.as_tensor(pred_idx, dtype=torch.int64),
                    torch.as_tensor(tgt_idx, dtype=torch.int64),
                )
            )
        return matches
