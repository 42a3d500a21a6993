"""Split a predicted track whose masks hold several separate blobs into one track per blob.

An avis post-processing option (`AVISMConfig.split_components`, off in the official
presets), not part of the AVISM paper. A model that has not learnt to separate two
instances of one class (the synthetic benchmark's "twins") predicts one track whose mask
covers both: a class-level mask. Where the two instances do not touch, that mask is two
connected components, and giving each its own track recovers the instances without any
change to the model. docs/predict.md has the measured effect.

Per track, frames decoded one at a time (memory O(H*W), not O(T*H*W)):
1. count the track's *major* blobs in every frame: 8-connected components whose area is at
   least `min_blob_fraction` of the frame's largest one (smaller ones are specks);
2. the track becomes k tracks, k = the largest count that at least `min_frame_share` of its
   non-empty frames reach (k = 1: the track is kept as it is, RLEs untouched);
3. starting at the first frame with exactly k major blobs (one sub-track per blob), walk
   forward then backward through the frames: a frame's major blobs are matched to the
   sub-tracks by minimum total squared centroid distance to each sub-track's last position
   (Hungarian), extra major blobs and all specks join the nearest sub-track, sub-tracks
   without a blob are empty in that frame (e.g. where the two instances touch, the merged
   blob goes to one of them).
Every pixel of the original mask ends up in exactly one sub-track; sub-tracks keep the
track's score and class and take its place in the ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from avis.inference.prediction import Prediction
from avis.inference.results import decode_rle, encode_mask

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SplitOptions:
    min_blob_fraction: float = 0.2  # a blob is major if its area >= this x the frame's largest
    min_frame_share: float = 0.25  # k tracks if >= this share of non-empty frames have >= k blobs

    def __post_init__(self) -> None:
        if not 0.0 < self.min_blob_fraction <= 1.0:
            raise ValueError(f"min_blob_fraction must be in (0, 1], got {self.min_blob_fraction}")
        if not 0.0 < self.min_frame_share <= 1.0:
            raise ValueError(f"min_frame_share must be in (0, 1], got {self.min_frame_share}")


@dataclass
class _Blobs:
    """Connected components of one frame's mask."""

    labels: np.ndarray  # (H, W) int32, 0 = background, 1..n components
    centroids: np.ndarray  # (n, 2) float64 (row, col), component i+1 at index i
    major: np.ndarray  # (m,) int64 component indices (0-based) of the major blobs

    @classmethod
    def of(cls, mask: np.ndarray, min_blob_fraction: float) -> _Blobs:
        labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
        if n == 0:
            return cls(labels, np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]  # (n,)
        rows, cols = np.nonzero(labels)
        ids = labels[rows, cols] - 1
        centroids = np.stack(
            [np.bincount(ids, rows, n) / areas, np.bincount(ids, cols, n) / areas], axis=1
        )
        major = np.flatnonzero(areas >= min_blob_fraction * areas.max())
        return cls(labels, centroids, major)


def num_parts(major_counts: Sequence[int], min_frame_share: float) -> int:
    """k: the largest blob count reached in >= min_frame_share of the non-empty frames
    (1 if the track has no frame with two major blobs that often)."""
    counts = np.asarray([c for c in major_counts if c > 0])
    if counts.size == 0:
        return 1
    k = 1
    for c in range(2, int(counts.max()) + 1):
        if np.mean(counts >= c) >= min_frame_share:
            k = c
    return k


def split_track(rles: Sequence[dict], options: SplitOptions = SplitOptions()) -> list[list[dict]]:
    """One track's per-frame RLEs -> the RLEs of its sub-tracks ([rles] if it is not split)."""
    counts = [len(_Blobs.of(decode_rle(r), options.min_blob_fraction).major) for r in rles]
    k = num_parts(counts, options.min_frame_share)
    if k < 2:
        return [list(rles)]
    first = counts.index(k)  # exists: k is reached in at least one frame
    parts: list[list[dict | None]] = [[None] * len(rles) for _ in range(k)]
    start = _assign(rles, first, None, k, parts, options)
    positions = start
    for t in range(first + 1, len(rles)):
        positions = _assign(rles, t, positions, k, parts, options)
    positions = start
    for t in range(first - 1, -1, -1):
        positions = _assign(rles, t, positions, k, parts, options)
    return [[r for r in part if r is not None] for part in parts]


def _assign(
    rles: Sequence[dict],
    t: int,
    positions: np.ndarray | None,  # (k, 2) each sub-track's last centroid; None = first frame
    k: int,
    parts: list[list[dict | None]],
    options: SplitOptions,
) -> np.ndarray | None:  # None while no frame has had major blobs
    """Give frame t's blobs to the k sub-tracks (writes parts[j][t]); -> updated positions."""
    blobs = _Blobs.of(decode_rle(rles[t]), options.min_blob_fraction)
    masks, new_positions = assign_blobs(blobs, positions, k)
    for j in range(k):
        parts[j][t] = encode_mask(masks[j])
    return new_positions


def frame_blobs(mask: np.ndarray, min_blob_fraction: float) -> _Blobs:
    """The connected components of one (H, W) bool mask, with its major blobs marked."""
    return _Blobs.of(mask, min_blob_fraction)


def assign_blobs(blobs: _Blobs, positions: np.ndarray | None, k: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Give one frame's blobs to k sub-tracks -> (k (H, W) bool masks, updated positions).

    positions (k, 2): each sub-track's last centroid; None = this frame has exactly k major
    blobs and sets them. Major blobs go to sub-tracks by minimum total squared centroid
    distance (Hungarian); extra major blobs and specks join the nearest sub-track."""
    owner = np.zeros(len(blobs.centroids) + 1, dtype=np.int64)  # component label -> sub-track
    new_positions = positions
    if len(blobs.major):
        major_centroids = blobs.centroids[blobs.major]  # (m, 2)
        if positions is None:  # the first frame has exactly k major blobs
            positions = major_centroids.copy()
        cost = ((major_centroids[:, None, :] - positions[None]) ** 2).sum(-1)  # (m, k)
        nearest = ((blobs.centroids[:, None, :] - positions[None]) ** 2).sum(-1).argmin(1)
        owner[1:] = nearest  # specks and unmatched major blobs: the nearest sub-track
        rows, cols = linear_sum_assignment(cost)
        owner[blobs.major[rows] + 1] = cols
        new_positions = positions.copy()
        new_positions[cols] = major_centroids[rows]
    masks = [(blobs.labels > 0) & (owner[blobs.labels] == j) for j in range(k)]
    return masks, new_positions


def split_components(prediction: Prediction, options: SplitOptions = SplitOptions()) -> Prediction:
    """Every track of a Prediction split into its separate instances (see module doc)."""
    scores, labels, rles = [], [], []
    for score, label, track in zip(prediction.scores, prediction.labels, prediction.rles):
        for part in split_track(track, options):
            scores.append(score)
            labels.append(label)
            rles.append(part)
    return replace(
        prediction,
        scores=np.asarray(scores, dtype=prediction.scores.dtype),
        labels=np.asarray(labels, dtype=prediction.labels.dtype),
        rles=rles,
    )
