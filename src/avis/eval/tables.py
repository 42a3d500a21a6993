"""Per-video tables shared by FSLA, HOTA and mAP: areas, presence and every mask IoU, once.

For each frame, pycocotools computes the IoUs between all non-null GT and all non-null predicted
masks of the video in one call, straight from the RLEs (no mask is decoded to pixels). The
intersection of a pair follows exactly from its IoU and the two areas, so track IoUs for mAP
(sum of intersections over sum of unions) need no further mask operation.

Letters: T frames, G GT tracks, P predicted tracks of one video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from avis.eval.predictions import PredTrack
from avis.eval.records import GTVideo
from avis.eval.rle import OFFICIAL_EMPTY_COUNTS
from avis.eval.rle import area as rle_area


@dataclass
class VideoTable:
    """Everything the metrics need about one video, with predictions in evaluation order."""

    name: str
    num_frames: int
    gt_ann_id: np.ndarray  # (G,) int64, annotation ids in file order
    gt_cat: np.ndarray  # (G,) int64
    gt_iscrowd: np.ndarray  # (G,) bool
    gt_areas_field: list  # (G,) the `areas` list of each annotation, or None
    gt_nonnull: np.ndarray  # (G, T) bool, segmentation not null
    gt_area: np.ndarray  # (G, T) int64 pixel count (0 where null)
    pr_index: np.ndarray  # (P,) int64, position in the prediction file
    pr_cat: np.ndarray  # (P,) int64
    pr_score: np.ndarray  # (P,) float64
    pr_nonnull: np.ndarray  # (P, T) bool
    pr_area: np.ndarray  # (P, T) int64
    pr_literal_empty: np.ndarray  # (P, T) bool, counts string is the official empty literal
    iou: np.ndarray  # (T, G, P) float64 mask IoU, 0 where either side is null
    inter_sum: np.ndarray  # (G, P) int64, intersection pixels summed over frames

    def gt_present(self, empty_is_absent: bool) -> np.ndarray:  # (G, T)
        return self.gt_area > 0 if empty_is_absent else self.gt_nonnull

    def pr_present(self, empty_is_absent: bool) -> np.ndarray:  # (P, T)
        return self.pr_area > 0 if empty_is_absent else self.pr_nonnull


def canonical_order(preds: list[PredTrack]) -> list[PredTrack]:
    """Predictions sorted by content (score desc, class, masks): independent of the file order.

    Two predictions with equal keys are identical in everything the metrics look at.
    """
    return sorted(
        preds,
        key=lambda p: (-p.score, p.category_id, [r["counts"] if r else "" for r in p.rles]),
    )


def _track_areas(rles: list[dict | None], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T,) non-null flags and (T,) pixel counts of one track."""
    nonnull = np.fromiter((r is not None for r in rles), dtype=bool, count=num_frames)
    areas = np.zeros(num_frames, dtype=np.int64)
    if nonnull.any():
        areas[nonnull] = rle_area([r for r in rles if r is not None])
    return nonnull, areas


def build_video_table(video: GTVideo, preds: list[PredTrack]) -> VideoTable:
    """Areas and IoUs of one video; `preds` in the order the protocol evaluates them."""
    T, G, P = video.num_frames, len(video.tracks), len(preds)
    gt_nonnull = np.zeros((G, T), dtype=bool)
    gt_area = np.zeros((G, T), dtype=np.int64)
    for g, track in enumerate(video.tracks):
        gt_nonnull[g], gt_area[g] = _track_areas(track.rles, T)
    pr_nonnull = np.zeros((P, T), dtype=bool)
    pr_area = np.zeros((P, T), dtype=np.int64)
    pr_literal_empty = np.zeros((P, T), dtype=bool)
    for p, pred in enumerate(preds):
        pr_nonnull[p] = [r is not None for r in pred.rles]
        pr_area[p] = pred.areas
        pr_literal_empty[p] = [r is not None and r["counts"] == OFFICIAL_EMPTY_COUNTS for r in pred.rles]

    iou = np.zeros((T, G, P), dtype=np.float64)
    both = gt_nonnull.any(1, keepdims=True) & pr_nonnull.any(1, keepdims=True).T  # (G, P)
    if both.any():
        # Only pairs whose areas are both non-zero can overlap.
        gt_has = gt_area > 0  # (G, T)
        pr_has = pr_area > 0  # (P, T)
        for t in np.flatnonzero(gt_has.any(0) & pr_has.any(0)):
            gi = np.flatnonzero(gt_has[:, t])
            pi = np.flatnonzero(pr_has[:, t])
            gt_rles = [video.tracks[g].rles[t] for g in gi]
            pr_rles = [preds[p].rles[t] for p in pi]
            iou[t][np.ix_(gi, pi)] = mask_utils.iou(gt_rles, pr_rles, [0] * len(pi))
    # Intersection i from IoU o = i / (a + b - i): i = o (a + b) / (1 + o), exact after rounding.
    area_sum = gt_area.T[:, :, None] + pr_area.T[:, None, :]  # (T, G, P)
    inter = np.rint(iou * area_sum / (1.0 + iou)).astype(np.int64)
    return VideoTable(
        name=video.name,
        num_frames=T,
        gt_ann_id=np.array([t.ann_id for t in video.tracks], dtype=np.int64),
        gt_cat=np.array([t.category_id for t in video.tracks], dtype=np.int64),
        gt_iscrowd=np.array([t.iscrowd for t in video.tracks], dtype=bool),
        gt_areas_field=[t.areas_field for t in video.tracks],
        gt_nonnull=gt_nonnull,
        gt_area=gt_area,
        pr_index=np.array([p.index for p in preds], dtype=np.int64),
        pr_cat=np.array([p.category_id for p in preds], dtype=np.int64),
        pr_score=np.array([p.score for p in preds], dtype=np.float64),
        pr_nonnull=pr_nonnull,
        pr_area=pr_area,
        pr_literal_empty=pr_literal_empty,
        iou=iou,
        inter_sum=inter.sum(0),
    )
