"""HOTA (Luiten et al. 2021) per class and video, combined as TrackEval combines it.

Each class is scored separately in each video; TP/FN/FP are summed over videos, AssA/AssRe/
AssPr and LocA are TP-weighted, and the result is averaged over classes, per threshold alpha.
The per-frame work is one Hungarian assignment; everything per alpha is vectorised.

Letters: A alphas, T frames, G GT tracks and P predicted tracks of one class in one video,
M matched pairs over all frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from avis.eval.constants import ALPHAS, EPS

LOC_FLOOR = 1e-10  # TrackEval's guard against 0/0 in LocA
HOTA_FIELDS = ("HOTA", "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA")


@dataclass
class HotaSequence:
    """HOTA counts of one class in one video, each (A,)."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    ass_a: np.ndarray
    ass_re: np.ndarray
    ass_pr: np.ndarray
    loc_a: np.ndarray


def _empty_sequence(num_gt_dets: int, num_pr_dets: int) -> HotaSequence:
    zeros = np.zeros(len(ALPHAS))
    return HotaSequence(
        tp=zeros, fn=zeros + num_gt_dets, fp=zeros + num_pr_dets,
        ass_a=zeros, ass_re=zeros, ass_pr=zeros, loc_a=np.ones(len(ALPHAS)),
    )  # fmt: skip


def hota_sequence(
    sim: np.ndarray,
    gt_present: np.ndarray,
    pr_present: np.ndarray,
    gt_file_order: np.ndarray,
    drop_zero_scores: bool,
) -> HotaSequence:
    """HOTA of one class in one video.

    sim: (T, G, P) mask IoUs, 0 where a side is absent; rows in ascending annotation id,
    columns in prediction order. gt_present (G, T), pr_present (P, T). gt_file_order: (G,)
    row indices in GT file order (the official row order of each frame's assignment).
    drop_zero_scores: solve each frame's assignment only over rows and columns with a positive
    score, so that tracks that touch nothing cannot change how ties are broken (fixed protocol).
    """
    num_gt_dets, num_pr_dets = int(gt_present.sum()), int(pr_present.sum())
    if num_pr_dets == 0 or num_gt_dets == 0:
        return _empty_sequence(num_gt_dets, num_pr_dets)
    G, P = sim.shape[1], sim.shape[2]
    # Global alignment score: per frame, IoUs normalised by row + column sums (HOTA eq. 14).
    denom = sim.sum(1, keepdims=True) + sim.sum(2, keepdims=True) - sim  # (T, G, P)
    norm = np.divide(sim, denom, out=np.zeros_like(sim), where=denom > EPS)
    potential = norm.sum(0)  # (G, P)
    gt_count = gt_present.sum(1)[:, None].astype(float)  # (G, 1)
    pr_count = pr_present.sum(1)[None, :].astype(float)  # (1, P)
    alignment = potential / (gt_count + pr_count - potential)  # (G, P)

    m_rows, m_cols, m_sims = _assign(sim, alignment, gt_present, pr_present, gt_file_order,
                                     drop_zero_scores)
    matched = m_sims[None, :] >= ALPHAS[:, None] - EPS  # (A, M)
    tp = matched.sum(1).astype(float)  # (A,)
    loc_sum = np.where(matched, m_sims[None, :], 0.0).sum(1)  # (A,)
    flat = (np.arange(len(ALPHAS))[:, None] * (G * P) + m_rows * P + m_cols)[matched]
    matches = np.bincount(flat, minlength=len(ALPHAS) * G * P).reshape(len(ALPHAS), G, P)
    matches = matches.astype(float)  # (A, G, P)
    ass_a = matches / np.maximum(1, gt_count + pr_count - matches)
    ass_re = matches / np.maximum(1, gt_count)
    ass_pr = matches / np.maximum(1, pr_count)
    per_det = np.maximum(1, tp)

    def weighted(x: np.ndarray) -> np.ndarray:
        return (matches * x).reshape(len(ALPHAS), -1).sum(1) / per_det

    return HotaSequence(
        tp=tp,
        fn=num_gt_dets - tp,
        fp=num_pr_dets - tp,
        ass_a=weighted(ass_a),
        ass_re=weighted(ass_re),
        ass_pr=weighted(ass_pr),
        loc_a=np.maximum(LOC_FLOOR, loc_sum) / np.maximum(LOC_FLOOR, tp),
    )


def _assign(sim, alignment, gt_present, pr_present, gt_file_order, drop_zero_scores):
    """Per frame, the Hungarian matches between present GT and predictions maximising
    alignment x IoU. Returns (M,) rows, columns and IoUs of the matched pairs.

    Frames with a single GT (or a single prediction) and a unique best score are solved with
    an argmax over all such frames at once, which is what the assignment returns; other frames
    go through scipy one by one, rows in GT file order as in TrackEval.
    """
    n_gt, n_pr = gt_present.sum(0), pr_present.sum(0)  # (T,)
    out_rows, out_cols, out_sims = [], [], []
    hard = []
    for axis, single in ((0, (n_gt == 1) & (n_pr >= 1)), (1, (n_pr == 1) & (n_gt >= 2))):
        frames = np.flatnonzero(single)  # (F,)
        if not len(frames):
            continue
        present = gt_present if axis == 0 else pr_present
        other = pr_present if axis == 0 else gt_present
        one = np.argmax(present[:, frames], axis=0)  # (F,) the single row (or column)
        if axis == 0:
            s_f = sim[frames, one, :]  # (F, P)
            score = alignment[one, :] * s_f
        else:
            s_f = sim[frames, :, one]  # (F, G)
            score = alignment[:, one].T * s_f
        score = np.where(other[:, frames].T, score, -1.0)
        best = np.argmax(score, axis=1)  # (F,)
        top = score[np.arange(len(frames)), best]
        tied = ((score == top[:, None]).sum(1) > 1) & (top > 0)
        hard.extend(frames[tied].tolist())
        keep = ~tied & (top > 0 if drop_zero_scores else top >= 0)
        rows, cols = (one, best) if axis == 0 else (best, one)
        out_rows.append(rows[keep])
        out_cols.append(cols[keep])
        out_sims.append(s_f[np.arange(len(frames)), best][keep])
    general = np.flatnonzero((n_gt >= 2) & (n_pr >= 2))
    for t in sorted(hard) + general.tolist():
        rows = gt_file_order[gt_present[gt_file_order, t]]
        cols = np.flatnonzero(pr_present[:, t])
        s_t = sim[t][rows[:, None], cols]
        score = alignment[rows[:, None], cols] * s_t
        if drop_zero_scores:
            keep_r, keep_c = score.any(1), score.any(0)
            rows, cols = rows[keep_r], cols[keep_c]
            s_t, score = s_t[keep_r][:, keep_c], score[keep_r][:, keep_c]
            if not len(rows) or not len(cols):
                continue
        r, c = linear_sum_assignment(-score)
        out_rows.append(rows[r])
        out_cols.append(cols[c])
        out_sims.append(s_t[r, c])
    if not out_rows:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(out_rows), np.concatenate(out_cols), np.concatenate(out_sims)


@dataclass
class HotaClassSums:
    """Sums over the videos of one class, as TrackEval's combine_sequences forms them."""

    tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    fn: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    fp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_a_tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_re_tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    ass_pr_tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))
    loc_a_tp: np.ndarray = field(default_factory=lambda: np.zeros(len(ALPHAS)))

    def add(self, seq: HotaSequence) -> None:
        self.tp = self.tp + seq.tp
        self.fn = self.fn + seq.fn
        self.fp = self.fp + seq.fp
        self.ass_a_tp = self.ass_a_tp + seq.ass_a * seq.tp
        self.ass_re_tp = self.ass_re_tp + seq.ass_re * seq.tp
        self.ass_pr_tp = self.ass_pr_tp + seq.ass_pr * seq.tp
        self.loc_a_tp = self.loc_a_tp + seq.loc_a * seq.tp

    def is_empty(self) -> bool:
        """No GT and no predicted detection of this class anywhere (TrackEval's test)."""
        return not (self.tp + self.fn + self.fp > EPS).any()

    def final(self) -> dict[str, np.ndarray]:
        """The eight HOTA fields of this class, each (A,)."""
        per_det = np.maximum(1.0, self.tp)
        det_re = self.tp / np.maximum(1, self.tp + self.fn)
        det_pr = self.tp / np.maximum(1, self.tp + self.fp)
        det_a = self.tp / np.maximum(1, self.tp + self.fn + self.fp)
        ass_a = self.ass_a_tp / per_det
        return {
            "HOTA": np.sqrt(det_a * ass_a),
            "DetA": det_a,
            "DetRe": det_re,
            "DetPr": det_pr,
            "AssA": ass_a,
            "AssRe": self.ass_re_tp / per_det,
            "AssPr": self.ass_pr_tp / per_det,
            "LocA": np.maximum(LOC_FLOOR, self.loc_a_tp) / np.maximum(LOC_FLOOR, self.tp),
        }


def class_average(per_class: list[HotaClassSums], ignore_empty: bool) -> dict[str, np.ndarray]:
    """Plain mean over classes of each field, per alpha; NaN if no class is left."""
    finals = [s.final() for s in per_class if not (ignore_empty and s.is_empty())]
    if not finals:
        return {name: np.full(len(ALPHAS), np.nan) for name in HOTA_FIELDS}
    return {name: np.mean([f[name] for f in finals], axis=0) for name in HOTA_FIELDS}
