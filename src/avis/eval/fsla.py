"""FSLA: frame-level sound-source localisation accuracy (AVIS, CVPR 2025).

Per video, GT tracks and predicted tracks are paired once, ignoring class, by a Hungarian
assignment on HOTA's global alignment score. Then, per threshold alpha, each frame is correct or
not, and correct frames are counted separately for frames with no (n), one (s) or several (m)
sounding GT objects. `official_video` reproduces the official code's lookups, quirks included;
`fixed_video` does what the metric describes.

Letters: A alphas, T frames, G GT tracks, P predicted tracks of one video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from avis.eval.constants import ALPHAS, EPS
from avis.eval.tables import VideoTable

FRAME_TYPES = ("n", "s", "m")  # no, single, multiple sounding GT objects
# Fixed protocol: alignment scores are compared at this resolution so that ties between
# pairings are recognised, then broken in favour of pairs that agree on the class.
ALIGNMENT_RESOLUTION = 1e-9


@dataclass
class FslaCounts:
    """Correct frames per type and alpha, and frames per type, summed over videos."""

    correct: dict[str, np.ndarray] = field(
        default_factory=lambda: {k: np.zeros(len(ALPHAS), dtype=np.int64) for k in FRAME_TYPES}
    )
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FRAME_TYPES, 0))

    def add_frame(self, kind: str, correct: np.ndarray | bool) -> None:
        self.total[kind] += 1
        self.correct[kind] += np.broadcast_to(np.asarray(correct, dtype=np.int64), (len(ALPHAS),))

    def add_frames(self, kind: str, num_frames: int, num_correct: int) -> None:
        """Frames whose correctness does not depend on alpha."""
        self.total[kind] += num_frames
        self.correct[kind] += num_correct


def _alignment(sim: np.ndarray, gt_present: np.ndarray, pr_present: np.ndarray) -> np.ndarray:
    """HOTA's global alignment score between tracks: (T, G, P) IoUs -> (G, P)."""
    denom = sim.sum(1, keepdims=True) + sim.sum(2, keepdims=True) - sim
    norm = np.divide(sim, denom, out=np.zeros_like(sim), where=denom > EPS)
    potential = norm.sum(0)
    gt_count = gt_present.sum(1)[:, None].astype(float)
    pr_count = pr_present.sum(1)[None, :].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):  # tracks absent everywhere: 0/0
        return np.nan_to_num(potential / (gt_count + pr_count - potential))


def _frame_kind(num_gt: int) -> str:
    return FRAME_TYPES[min(num_gt, 2)]


def _gates(table: VideoTable, gt_present, pr_present, pr_counted) -> np.ndarray:
    """(T,) bool: the GT class set equals the predicted class set, and the number of present
    GT equals the number of counted predictions (pr_counted, (P, T))."""
    classes, cat_index = np.unique(np.concatenate([table.gt_cat, table.pr_cat]), return_inverse=True)
    gt_onehot = np.eye(len(classes), dtype=np.int64)[cat_index[: len(table.gt_cat)]]  # (G, C)
    pr_onehot = np.eye(len(classes), dtype=np.int64)[cat_index[len(table.gt_cat) :]]  # (P, C)
    gt_classes = gt_present.T.astype(np.int64) @ gt_onehot > 0  # (T, C)
    pr_classes = pr_present.T.astype(np.int64) @ pr_onehot > 0
    same_sets = (gt_classes == pr_classes).all(1)
    return same_sets & (gt_present.sum(0) == pr_counted.sum(0))


def _count_simple_frames(counts: FslaCounts, gate: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """Count silent frames and failed gates (correctness known); return the frames left."""
    silent = num_gt == 0
    counts.add_frames("n", int(silent.sum()), int((silent & gate).sum()))
    for kind, is_kind in (("s", num_gt == 1), ("m", num_gt >= 2)):
        counts.add_frames(kind, int((is_kind & ~gate).sum()), 0)
    return np.flatnonzero(gate & ~silent)


def official_video(table: VideoTable, counts: FslaCounts) -> None:
    """One video as the official evaluator scores it (docs/evaluation.md lists the quirks)."""
    gt_nonnull, pr_nonnull = table.gt_nonnull, table.pr_nonnull  # (G, T), (P, T)
    rows = np.flatnonzero(gt_nonnull.any(1))
    rows = rows[np.argsort(table.gt_ann_id[rows], kind="stable")]  # ascending annotation id
    cols = np.flatnonzero(pr_nonnull.any(1))  # prediction order
    sim = table.iou[:, rows][:, :, cols]
    alignment = _alignment(sim, gt_nonnull[rows], pr_nonnull[cols])
    pair_rows, pair_cols = linear_sum_assignment(-alignment)  # pair_rows ascending
    gate = _gates(table, gt_nonnull, pr_nonnull, pr_nonnull & ~table.pr_literal_empty)
    for t in _count_simple_frames(counts, gate, gt_nonnull.sum(0)):
        gts = np.flatnonzero(gt_nonnull[:, t])  # file order
        preds = np.flatnonzero(pr_nonnull[:, t])  # prediction order
        kind = _frame_kind(len(gts))
        if kind == "s":
            # k: file position of the sounding annotation, looked up among prediction indices.
            hits = np.flatnonzero(pair_cols == gts[0])
            if not len(hits) or hits[0] >= len(preds):
                counts.add_frame(kind, False)
                continue
            counts.add_frame(kind, table.iou[t, gts[0], preds[hits[0]]] > ALPHAS)
            continue
        ok = np.ones(len(ALPHAS), dtype=bool)
        for r, c in zip(pair_rows, pair_cols):
            # r (an id-order index) is used as a file position; c indexes this frame's
            # non-null predictions.
            if c >= len(preds) or table.gt_cat[r] != table.pr_cat[preds[c]]:
                ok[:] = False
                break
            if gt_nonnull[r, t]:
                ok &= table.iou[t, r, preds[c]] > ALPHAS
            elif not table.pr_literal_empty[preds[c], t]:
                ok[:] = False
                break
        counts.add_frame(kind, ok)


def _pair_fixed(alignment: np.ndarray, same_class: np.ndarray) -> dict[int, int]:
    """Row -> column pairing: maximal alignment, ties broken towards class agreement.

    Only rows and columns with some positive alignment take part, so tracks that overlap
    nothing (a far-away false positive) cannot change the pairing.
    """
    rows = np.flatnonzero((alignment > 0).any(1))
    cols = np.flatnonzero((alignment > 0).any(0))
    if not len(rows) or not len(cols):
        return {}
    sub = alignment[np.ix_(rows, cols)]
    steps = np.rint(sub / ALIGNMENT_RESOLUTION)  # exact integers below 2**53
    bonus = same_class[np.ix_(rows, cols)].astype(float)
    weight = steps * (min(len(rows), len(cols)) + 1) + bonus
    r, c = linear_sum_assignment(-weight)
    return {int(rows[i]): int(cols[j]) for i, j in zip(r, c) if sub[i, j] > 0}


def fixed_video(table: VideoTable, counts: FslaCounts) -> None:
    """One video with the intended definition: empty masks are absence, per-frame class sets,
    each GT compared with its own partner (independent of the order of the predictions)."""
    gt_present = table.gt_present(empty_is_absent=True)  # (G, T)
    pr_present = table.pr_present(empty_is_absent=True)  # (P, T)
    alignment = _alignment(table.iou, gt_present, pr_present)  # (G, P)
    same_class = table.gt_cat[:, None] == table.pr_cat[None, :]
    partner = _pair_fixed(alignment, same_class)
    gate = _gates(table, gt_present, pr_present, pr_present)
    for t in _count_simple_frames(counts, gate, gt_present.sum(0)):
        gts = np.flatnonzero(gt_present[:, t])
        kind = _frame_kind(len(gts))
        ok = np.ones(len(ALPHAS), dtype=bool)
        for g in gts:
            p = partner.get(int(g))
            if p is None or not pr_present[p, t] or table.gt_cat[g] != table.pr_cat[p]:
                ok[:] = False
                break
            ok &= table.iou[t, g, p] > ALPHAS
        absent_pairs_ok = all(pr_present[p, t] == gt_present[g, t] for g, p in partner.items())
        counts.add_frame(kind, ok & absent_pairs_ok)


def summarise(counts: FslaCounts) -> dict[str, float]:
    """Unrounded FA, FAn/FAs/FAm (percent, mean over alpha) and *_count / *_all (mean over
    alpha, to be truncated)."""
    out: dict[str, float] = {}
    all_correct = sum(counts.correct[k] for k in FRAME_TYPES)
    all_total = sum(counts.total.values())
    with np.errstate(invalid="ignore", divide="ignore"):
        out["FA"] = 100 * float(np.mean(all_correct / np.float64(all_total)))
        for k in FRAME_TYPES:
            total = np.full(len(ALPHAS), counts.total[k], dtype=np.int64)
            out[f"FA{k}"] = 100 * float(np.mean(counts.correct[k] / total.astype(np.float64)))
            out[f"FA{k}_count"] = float(np.mean(counts.correct[k]))
            out[f"FA{k}_all"] = float(np.mean(total))
    return out
