"""`evaluate`: FSLA, HOTA and track mAP of predictions against AVISeg ground truth.

Two protocols:
- "official" reproduces the official AVIS evaluator, quirks included (numbers comparable with
  published tables);
- "fixed" corrects the quirks (see docs/evaluation.md for each difference and why).

Letters: A alphas (19), K track-IoU thresholds (10).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avis.eval import fsla, hota, track_map
from avis.eval.constants import AP50_INDEX, AP75_INDEX, PERCENT
from avis.eval.predictions import PredTrack, load_predictions
from avis.eval.records import GroundTruth, load_ground_truth
from avis.eval.tables import VideoTable, build_video_table, canonical_order

PROTOCOLS = ("official", "fixed")
# Keys of `EvalResult.metrics`, in the order of the official evaluator's output.
METRIC_KEYS: tuple[str, ...] = (
    "AP_all", "AP_s", "AP_m", "AP_l", "AR_all",
    "HOTA", "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA",
    "FA", "FAn", "FAn_count", "FAn_all", "FAs", "FAs_count", "FAs_all",
    "FAm", "FAm_count", "FAm_all",
)  # fmt: skip
COUNT_KEYS = frozenset(k for k in METRIC_KEYS if k.endswith(("_count", "_all")) and k.startswith("FA"))
ROUND_DIGITS = 2


@dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation.

    metrics: exactly METRIC_KEYS; percentages rounded with np.round(v, 2), frame counts
        truncated to int, None where undefined (NaN, e.g. FAn without silent frames).
    unrounded: the same keys before rounding (None for NaN).
    extra: AP50 and AP75 (rounded percentages).
    per_class: class name -> {HOTA fields, AP, AP50, AP75, AR (percent, unrounded; None where
        the class has no GT for AP/AR, or is empty and ignored for HOTA), num_gt_tracks,
        num_pred_tracks}; None unless asked for.
    """

    protocol: str
    metrics: dict[str, float | int | None]
    unrounded: dict[str, float | None]
    extra: dict[str, float | None]
    per_class: dict[str, dict[str, float | int | None]] | None
    num_videos: int
    num_predictions: int


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _round(key: str, v: float) -> float | int | None:
    if math.isnan(v):
        return None
    if key in COUNT_KEYS:
        return int(v)
    return float(np.round(np.float64(v), ROUND_DIGITS))


def _video_order(gt: GroundTruth) -> list:
    return sorted(gt.videos, key=lambda v: v.name)


def _evaluation_order(preds: list[PredTrack], protocol: str) -> list[PredTrack]:
    if protocol == "fixed":
        return canonical_order(preds)
    return preds


class _Accumulator:
    """Sums of all three metrics over videos, fed one VideoTable at a time."""

    def __init__(self, gt: GroundTruth, protocol: str):
        self.protocol = protocol
        self.fixed = protocol == "fixed"
        self.class_ids = [c for c, _ in gt.categories]
        self.hota = {c: hota.HotaClassSums() for c in self.class_ids}
        self.map = {c: track_map.MapClassSums() for c in self.class_ids}
        self.fsla = fsla.FslaCounts()
        self.next_pred_id = 0  # official internal prediction ids, video by video
        self.num_gt_tracks = dict.fromkeys(self.class_ids, 0)
        self.num_pred_tracks = dict.fromkeys(self.class_ids, 0)

    def add(self, table: VideoTable) -> None:
        (fsla.fixed_video if self.fixed else fsla.official_video)(table, self.fsla)
        gt_present = table.gt_present(self.fixed)  # (G, T)
        pr_present = table.pr_present(self.fixed)  # (P, T)
        pred_ids = self.next_pred_id + np.arange(len(table.pr_cat))
        self.next_pred_id += len(table.pr_cat)
        for c in set(table.gt_cat.tolist()) | set(table.pr_cat.tolist()):
            gt_idx = np.flatnonzero(table.gt_cat == c)  # file order
            pr_idx = np.flatnonzero(table.pr_cat == c)
            self.num_gt_tracks[c] += len(gt_idx)
            self.num_pred_tracks[c] += len(pr_idx)
            self._add_hota(table, c, gt_idx, pr_idx, gt_present, pr_present)
            self._add_map(table, c, gt_idx, pr_idx, pred_ids, gt_present, pr_present)

    def _add_hota(
        self, table: VideoTable, c: int, gt_idx: np.ndarray, pr_idx: np.ndarray,
        gt_present: np.ndarray, pr_present: np.ndarray,
    ) -> None:  # fmt: skip
        gt_idx = gt_idx[gt_present[gt_idx].any(1)]
        pr_idx = pr_idx[pr_present[pr_idx].any(1)]
        by_id = gt_idx[np.argsort(table.gt_ann_id[gt_idx], kind="stable")]  # HOTA row order
        file_order = np.argsort(by_id, kind="stable")  # rows (id order) listed in file order
        sim = table.iou[:, by_id][:, :, pr_idx]  # (T, G, P)
        seq = hota.hota_sequence(
            sim, gt_present[by_id], pr_present[pr_idx], file_order, drop_zero_scores=self.fixed
        )
        self.hota[c].add(seq)

    def _add_map(
        self, table: VideoTable, c: int, gt_idx: np.ndarray, pr_idx: np.ndarray,
        pred_ids: np.ndarray, gt_present: np.ndarray, pr_present: np.ndarray,
    ) -> None:  # fmt: skip
        if self.fixed:  # tracks that never show up are not tracks
            gt_idx = gt_idx[gt_present[gt_idx].any(1)]
            pr_idx = pr_idx[pr_present[pr_idx].any(1)]
        if not len(gt_idx) and not len(pr_idx):
            return
        order = np.argsort(-table.pr_score[pr_idx], kind="mergesort")
        pr_idx = pr_idx[order]
        gt_total = table.gt_area[gt_idx].sum(1)  # (G,)
        pr_total = table.pr_area[pr_idx].sum(1)  # (D,)
        inter = table.inter_sum[np.ix_(gt_idx, pr_idx)].T.astype(float)  # (D, G)
        union = pr_total[:, None] + gt_total[None, :] - inter
        ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        seqs = track_map.map_sequence(
            ious,
            scores=table.pr_score[pr_idx],
            dt_ids=pred_ids[pr_idx],
            dt_area=_mean_nonzero_area(table.pr_area[pr_idx]),
            gt_area=self._gt_track_area(table, gt_idx),
            gt_crowd=table.gt_iscrowd[gt_idx],
            official_matched_test=not self.fixed,
        )
        self.map[c].add(seqs)

    def _gt_track_area(self, table: VideoTable, gt_idx: np.ndarray) -> np.ndarray:
        """Official: mean of the non-zero entries of the annotation's `areas` field (the masks
        when the field is missing); fixed: always the masks."""
        out = _mean_nonzero_area(table.gt_area[gt_idx])
        if not self.fixed:
            for j, g in enumerate(gt_idx):
                field = table.gt_areas_field[g]
                if field is not None:
                    values = [a for a in field if a]
                    out[j] = np.array(values).mean() if values else 0.0
        return out


def _mean_nonzero_area(areas: np.ndarray) -> np.ndarray:
    """(N, T) per-frame areas -> (N,) mean over the non-zero frames (0 if none)."""
    out = np.zeros(len(areas))
    for i, row in enumerate(areas):
        nz = row[row > 0]
        if len(nz):
            out[i] = nz.mean()
    return out


def _summary(acc: _Accumulator) -> tuple[dict[str, float], dict[str, float], dict]:
    """Unrounded metrics, extra metrics and per-class arrays."""
    unrounded: dict[str, float] = {}
    per_class_map = [acc.map[c].final() for c in acc.class_ids]
    ap = {lbl: track_map.class_average(per_class_map, f"AP_{lbl}") for lbl in track_map.AREA_LABELS}
    for lbl in track_map.AREA_LABELS:
        unrounded[f"AP_{lbl}"] = PERCENT * float(np.mean(ap[lbl]))
    unrounded["AR_all"] = PERCENT * float(np.mean(track_map.class_average(per_class_map, "AR_all")))
    per_class_hota = [acc.hota[c] for c in acc.class_ids]
    averaged = hota.class_average(per_class_hota, ignore_empty=acc.fixed)
    for name in hota.HOTA_FIELDS:
        unrounded[name] = PERCENT * float(np.mean(averaged[name]))
    unrounded.update(fsla.summarise(acc.fsla))
    extra = {
        "AP50": PERCENT * float(ap["all"][AP50_INDEX]),
        "AP75": PERCENT * float(ap["all"][AP75_INDEX]),
    }
    return unrounded, extra, {"map": per_class_map, "hota": per_class_hota}


def _per_class(acc: _Accumulator, gt: GroundTruth, arrays: dict) -> dict[str, dict]:
    out = {}
    for i, (c, name) in enumerate(gt.categories):
        sums: hota.HotaClassSums = arrays["hota"][i]
        ignored = acc.fixed and sums.is_empty()
        row: dict[str, float | int | None] = {}
        for field, values in sums.final().items():
            row[field] = None if ignored else PERCENT * float(np.mean(values))
        ap, ar = arrays["map"][i]["AP_all"], arrays["map"][i]["AR_all"]
        has_gt = bool((ap > -1).any())
        row["AP"] = PERCENT * float(np.mean(ap)) if has_gt else None
        row["AP50"] = PERCENT * float(ap[AP50_INDEX]) if has_gt else None
        row["AP75"] = PERCENT * float(ap[AP75_INDEX]) if has_gt else None
        row["AR"] = PERCENT * float(np.mean(ar)) if has_gt else None
        row["num_gt_tracks"] = acc.num_gt_tracks[c]
        row["num_pred_tracks"] = acc.num_pred_tracks[c]
        out[name] = row
    return out


def evaluate(
    gt: str | Path | Mapping | GroundTruth,
    predictions: str | Path | Sequence[Mapping],
    protocol: str = "official",
    per_class: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Score predicted tracks against AVISeg ground truth with FSLA, HOTA and track mAP.

    gt: a GT JSON path, the loaded dict, or a GroundTruth from `load_ground_truth` (parse once,
        evaluate many times). predictions: a results JSON path or the list of
        {video_id, score, category_id, segmentations} records (an empty list is valid).
    protocol: "official" (bit-compatible with the official evaluator) or "fixed".
    progress: called as progress(done_videos, num_videos) after each video.
    Raises avis.errors.DataError for malformed input, naming the entry.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    gt = load_ground_truth(gt)
    preds = load_predictions(predictions, gt)
    acc = _Accumulator(gt, protocol)
    videos = _video_order(gt)
    for i, video in enumerate(videos):
        ordered = _evaluation_order(preds[video.video_id], protocol)
        acc.add(build_video_table(video, ordered))
        if progress is not None:
            progress(i + 1, len(videos))
    unrounded, extra, arrays = _summary(acc)
    metrics = {k: _round(k, unrounded[k]) for k in METRIC_KEYS}
    return EvalResult(
        protocol=protocol,
        metrics=metrics,
        unrounded={k: _nan_to_none(unrounded[k]) for k in METRIC_KEYS},
        extra={k: _round(k, v) for k, v in extra.items()},
        per_class=_per_class(acc, gt, arrays) if per_class else None,
        num_videos=len(videos),
        num_predictions=sum(len(v) for v in preds.values()),
    )
