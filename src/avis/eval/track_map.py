"""Track mAP / AR in TrackEval's YouTube-VIS configuration (TAO-style greedy matching).

Per video and class, predictions (by descending score) greedily take the best still-free GT
whose spatio-temporal mask IoU clears the threshold; precision and recall are then pooled per
class over all videos and precision is sampled at 101 recall points. Area ranges use the mean
per-frame area of a track.

Letters: K IoU thresholds, D predicted tracks and G GT tracks of one class in one video,
R recall points, L area labels (all, s, m, l).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avis.eval.constants import AREA_RANGES, EPS, IOU_THRESHOLDS, RECALL_POINTS

AREA_LABELS = ("all", *AREA_RANGES)  # (L,)
MAX_MATCH_IOU = 1 - 1e-10  # TrackEval caps the threshold just below 1


@dataclass
class MapSequence:
    """Matches of one class in one video, for one area label."""

    scores: np.ndarray  # (D,) sorted descending
    matched: np.ndarray  # (K, D) bool, the prediction is a true positive candidate
    dt_ignore: np.ndarray  # (K, D) bool
    gt_ignore: np.ndarray  # (G,) bool


def _in_range(area: np.ndarray, label: str) -> np.ndarray:
    if label == "all":
        return np.ones(len(area), dtype=bool)
    lo, hi = AREA_RANGES[label]
    return (lo - EPS <= area) & (area <= hi + EPS)


def map_sequence(
    ious: np.ndarray,
    scores: np.ndarray,
    dt_ids: np.ndarray,
    dt_area: np.ndarray,
    gt_area: np.ndarray,
    gt_crowd: np.ndarray,
    official_matched_test: bool,
) -> dict[str, MapSequence]:
    """Greedy matching of one class in one video, for every area label at once.

    ious: (D, G) track IoUs with predictions already sorted by descending score (stable).
    dt_ids: (D,) internal prediction ids. official_matched_test: a GT counts as taken only if
    the id of the prediction that took it is > 0 (the official test; id 0 never blocks it),
    otherwise any match blocks it.
    """
    D, G = ious.shape
    K, L = len(IOU_THRESHOLDS), len(AREA_LABELS)
    gt_ig = np.stack([~_in_range(gt_area, label) | gt_crowd for label in AREA_LABELS])  # (L, G)
    order = np.argsort(gt_ig, axis=1, kind="mergesort")  # ignored GT last
    gt_ig_sorted = np.take_along_axis(gt_ig, order, axis=1)  # (L, G)
    iou_sorted = ious.T[order]  # (L, G, D)
    dt_gt = np.full((L, K, D), -1, dtype=np.int64)  # sorted-GT index of each match
    if D and G:
        gt_taken_by = np.full((L, K, G), -1, dtype=np.int64)
        start_best = np.broadcast_to(np.minimum(IOU_THRESHOLDS, MAX_MATCH_IOU), (L, K))
        for d in range(D):
            best = start_best
            m = np.full((L, K), -1, dtype=np.int64)
            stopped = np.zeros((L, K), dtype=bool)
            for g in range(G):
                taken = gt_taken_by[:, :, g] > (0 if official_matched_test else -1)
                live = ~stopped & ~taken
                # Once a regular GT is matched, ignored GT (sorted last) are not tried.
                m_ig = np.take_along_axis(gt_ig_sorted, np.maximum(m, 0), axis=1)
                stop = live & (m > -1) & ~m_ig & gt_ig_sorted[:, g : g + 1]
                stopped |= stop
                value = iou_sorted[:, g, d : d + 1]  # (L, 1)
                better = live & ~stop & (value >= best - EPS)
                best = np.where(better, value, best)
                m = np.where(better, g, m)
            dt_gt[:, :, d] = m
            hit_l, hit_k = np.nonzero(m > -1)
            gt_taken_by[hit_l, hit_k, m[hit_l, hit_k]] = dt_ids[d]
    out = {}
    for i, label in enumerate(AREA_LABELS):
        matched = dt_gt[i] > -1  # (K, D)
        dt_ig = np.zeros((K, D), dtype=bool)
        dt_ig[matched] = gt_ig_sorted[i][dt_gt[i][matched]]
        unmatched_out_of_range = ~matched & ~_in_range(dt_area, label)[None, :]
        out[label] = MapSequence(scores, matched, dt_ig | unmatched_out_of_range, gt_ig_sorted[i])
    return out


@dataclass
class MapClassSums:
    """Per-video sequences of one class, in video evaluation order."""

    sequences: dict[str, list[MapSequence]] = field(
        default_factory=lambda: {label: [] for label in AREA_LABELS}
    )

    def add(self, per_label: dict[str, MapSequence]) -> None:
        for label, seq in per_label.items():
            self.sequences[label].append(seq)

    def final(self) -> dict[str, np.ndarray]:
        """AP_<label> and AR_<label> of this class, each (K,), -1 where there is no GT."""
        out = {}
        for label in AREA_LABELS:
            out[f"AP_{label}"], out[f"AR_{label}"] = _precision_recall(self.sequences[label])
        return out


def _precision_recall(seqs: list[MapSequence]) -> tuple[np.ndarray, np.ndarray]:
    K = len(IOU_THRESHOLDS)
    ap = -np.ones(K)
    ar = -np.ones(K)
    if not seqs:
        return ap, ar
    scores = np.concatenate([s.scores for s in seqs])
    order = np.argsort(-scores, kind="mergesort")  # ties: video order, then rank in video
    matched = np.concatenate([s.matched for s in seqs], axis=1)[:, order]  # (K, N)
    dt_ig = np.concatenate([s.dt_ignore for s in seqs], axis=1)[:, order]
    num_gt = int(np.count_nonzero(~np.concatenate([s.gt_ignore for s in seqs])))
    if num_gt == 0:
        return ap, ar
    tp = np.cumsum(matched & ~dt_ig, axis=1).astype(float)  # (K, N)
    fp = np.cumsum(~matched & ~dt_ig, axis=1).astype(float)
    recall = tp / num_gt
    precision = tp / (fp + tp + np.spacing(1))
    # Make precision non-increasing from the right, then sample it at the recall points.
    precision = np.flip(np.maximum.accumulate(np.flip(precision, 1), axis=1), 1)
    sampled = np.zeros((K, len(RECALL_POINTS)))  # (K, R)
    for k in range(K):
        idx = np.searchsorted(recall[k], RECALL_POINTS, side="left")
        valid = idx < len(recall[k])
        sampled[k, valid] = precision[k, idx[valid]]
        ar[k] = recall[k, -1] if recall.shape[1] else 0.0
    ap = np.array([np.mean(row) for row in sampled])
    return ap, ar


def class_average(per_class: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    """Mean over classes that have GT (value > -1), per threshold; -1 where none has."""
    stacked = np.array([c[name] for c in per_class]).reshape(len(per_class), len(IOU_THRESHOLDS))
    out = np.empty(stacked.shape[1])
    for k in range(stacked.shape[1]):
        values = stacked[:, k]
        out[k] = np.mean(values[values > -1]) if (values > -1).any() else -1.0
    return out
