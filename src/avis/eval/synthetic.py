"""Synthetic AVISeg-style cases (GT dict + prediction list) for tests and benchmarks.

Objects are moving ellipses. GT masks are 16-vertex polygons (as AVISeg stores them); predicted
masks are compressed RLEs built directly from the ellipse, column by column, so that even
AVISeg-test-sized cases (205 videos x 61 frames at 720p) are made in seconds without
rasterising full frames.

Letters: T frames, W image columns, F foreground columns of one mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from avis.categories import AVISEG_CLASSES, categories_json

POLYGON_VERTICES = 16
SCORE_DECIMALS = 3


@dataclass(frozen=True)
class SyntheticSpec:
    """Ranges are inclusive (low, high)."""

    num_videos: int = 3
    frames: tuple[int, int] = (5, 12)
    height: int = 72
    width: int = 96
    gt_tracks: tuple[int, int] = (1, 4)
    preds_per_gt: tuple[int, int] = (0, 2)
    false_positives: tuple[int, int] = (0, 2)
    class_pool: int = 4  # classes are drawn from ids 1..class_pool
    silent_prob: float = 0.25  # chance that a GT track is silent on a given frame
    wrong_class_prob: float = 0.15
    presence_flip_prob: float = 0.1  # a prediction is present where its GT is not, or vice versa
    jitter: float = 0.08  # shift of a prediction, as a fraction of the object size
    empty_as_null: bool = False  # absent predicted frames: null instead of an empty RLE
    unique_scores: bool = False
    crowd_prob: float = 0.0


def ellipse_rle(cx: float, cy: float, ax: float, ay: float, h: int, w: int) -> dict:
    """Compressed RLE (str counts) of the pixels whose centres lie inside the ellipse."""
    x = np.arange(max(0, int(cx - ax) - 1), min(w, int(cx + ax) + 2))  # candidate columns
    u = (x + 0.5 - cx) / max(ax, 1e-6)
    inside = np.abs(u) <= 1
    x, u = x[inside], u[inside]
    dy = max(ay, 1e-6) * np.sqrt(1 - u**2)
    y0 = np.maximum(np.ceil(cy - dy - 0.5), 0).astype(np.int64)
    y1 = np.minimum(np.floor(cy + dy - 0.5), h - 1).astype(np.int64)
    keep = y0 <= y1
    starts = x[keep] * h + y0[keep]  # (F,) first foreground pixel of each column
    ends = x[keep] * h + y1[keep] + 1
    if len(starts):
        touching = np.flatnonzero(starts[1:] == ends[:-1])  # runs continuing into the next column
        starts = np.delete(starts, touching + 1)
        ends = np.delete(ends, touching)
    bounds = np.concatenate(([0], np.stack([starts, ends], 1).ravel(), [h * w]))
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def ellipse_polygon(cx: float, cy: float, ax: float, ay: float) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, POLYGON_VERTICES, endpoint=False)
    xy = np.stack([cx + ax * np.cos(angles), cy + ay * np.sin(angles)], 1)
    return np.round(xy, 2).ravel().tolist()


def _trajectory(rng: np.random.Generator, spec: SyntheticSpec, num_frames: int) -> np.ndarray:
    """(T, 4) centre x, centre y, semi-axis x, semi-axis y of one moving object."""
    h, w = spec.height, spec.width
    ax = rng.uniform(0.06, 0.25) * w
    ay = rng.uniform(0.06, 0.25) * h
    start = rng.uniform([ax, ay], [w - ax, h - ay])
    velocity = rng.normal(0, 0.01, 2) * [w, h]
    t = np.arange(num_frames)[:, None]
    centre = np.clip(start + velocity * t, [0, 0], [w, h])
    return np.concatenate([centre, np.broadcast_to([ax, ay], (num_frames, 2))], 1)


def _scores(rng: np.random.Generator, n: int, unique: bool) -> list[float]:
    if unique:
        grid = rng.choice(10**SCORE_DECIMALS - 1, size=n, replace=False) + 1
        return [float(s) / 10**SCORE_DECIMALS for s in grid]
    return [round(float(s), SCORE_DECIMALS) for s in rng.uniform(0.01, 1.0, n)]


def _pred_track(rng, spec, video_id, traj, present, category, h, w) -> dict:
    empty = None if spec.empty_as_null else ellipse_rle(0, 0, 0, 0, h, w)
    segs: list[dict | None] = []
    for t, (cx, cy, ax, ay) in enumerate(traj):
        if present[t]:
            segs.append(ellipse_rle(cx, cy, ax, ay, h, w))
        else:
            segs.append(dict(empty) if empty else None)
    return {"video_id": video_id, "score": 0.0, "category_id": int(category), "segmentations": segs}


def make_case(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[dict, list[dict]]:
    """One random case: (GT dict with polygon masks, prediction list with RLE masks)."""
    h, w = spec.height, spec.width
    videos, annotations, preds = [], [], []
    ann_id = 1
    for v in range(spec.num_videos):
        video_id = v + 1
        num_frames = int(rng.integers(spec.frames[0], spec.frames[1] + 1))
        names = [f"video_{v:04d}/{t:05d}.jpg" for t in range(num_frames)]
        videos.append({"id": video_id, "file_names": names, "length": num_frames, "height": h, "width": w})
        for _ in range(int(rng.integers(spec.gt_tracks[0], spec.gt_tracks[1] + 1))):
            category = int(rng.integers(1, spec.class_pool + 1))
            traj = _trajectory(rng, spec, num_frames)
            present = rng.random(num_frames) >= spec.silent_prob
            segs: list[list[list[float]] | None] = []
            areas: list[int | None] = []
            for t in range(num_frames):
                if present[t]:
                    poly = ellipse_polygon(*traj[t])
                    rle = mask_utils.frPyObjects([poly], h, w)[0]
                    segs.append([poly])
                    areas.append(int(mask_utils.area(rle)))
                else:
                    segs.append(None)
                    areas.append(None)
            annotations.append({
                "id": ann_id, "video_id": video_id, "category_id": category,
                "iscrowd": int(rng.random() < spec.crowd_prob), "height": h, "width": w,
                "length": 1, "segmentations": segs, "areas": areas,
                "bboxes": [None] * num_frames,
            })  # fmt: skip
            ann_id += 1
            for _ in range(int(rng.integers(spec.preds_per_gt[0], spec.preds_per_gt[1] + 1))):
                shift = rng.normal(0, spec.jitter, 2) * traj[0, 2:] * 2
                ptraj = traj + np.concatenate([shift, [0, 0]])
                ptraj[:, 2:] *= rng.uniform(0.8, 1.2, 2)
                flip = rng.random(num_frames) < spec.presence_flip_prob
                pcat = category
                if rng.random() < spec.wrong_class_prob:
                    pcat = int(rng.integers(1, spec.class_pool + 1))
                preds.append(_pred_track(rng, spec, video_id, ptraj, present ^ flip, pcat, h, w))
        for _ in range(int(rng.integers(spec.false_positives[0], spec.false_positives[1] + 1))):
            traj = _trajectory(rng, spec, num_frames)
            present = rng.random(num_frames) >= spec.silent_prob
            pcat = int(rng.integers(1, spec.class_pool + 1))
            preds.append(_pred_track(rng, spec, video_id, traj, present, pcat, h, w))
    for pred, score in zip(preds, _scores(rng, len(preds), spec.unique_scores)):
        pred["score"] = score
    order = rng.permutation(len(preds))
    preds = [preds[i] for i in order]
    gt = {"videos": videos, "annotations": annotations, "categories": categories_json(AVISEG_CLASSES)}
    return gt, preds
