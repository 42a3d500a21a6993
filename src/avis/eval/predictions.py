"""Predicted tracks: loading and checking a results list against the ground truth.

A results list (or JSON file) holds one entry per predicted track: `{video_id, score,
category_id, segmentations}` with one RLE dict (or null) per frame of the video. Compressed RLE
dicts are kept as given (never modified); uncompressed ones (counts as a list) are compressed.
Every counts string of a video is decoded once, in one numpy batch, which both checks it and
yields its area. Errors are DataErrors naming the file, the prediction, the frame and the field.

Letters: T frames of a video.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avis.errors import DataError
from avis.eval.records import GroundTruth, GTVideo, field, int_field, load_json
from avis.eval.rle import check_uncompressed_counts, checked_areas, compress_counts

PRED_SOURCE_DEFAULT = "<prediction records>"


@dataclass
class PredTrack:
    index: int  # position in the prediction list
    score: float
    category_id: int
    rles: list  # (T,) compressed RLE dicts (counts: str) or None
    areas: np.ndarray  # (T,) int64 foreground pixels, 0 where null or empty


def _slow_frame(seg, video: GTVideo, where: str) -> dict:
    """A frame that is not a plain {size: [h, w], counts: str} dict: convert it or explain."""
    if not isinstance(seg, Mapping):
        raise DataError(f"{where}: expected an RLE dict {{size, counts}} or null")
    size, counts = field(seg, "size", where), field(seg, "counts", where)
    h, w = video.height, video.width
    if not isinstance(size, (list, tuple)) or list(size) != [h, w]:
        raise DataError(
            f"{where}: RLE size {size} differs from the size of video {video.video_id} [{h}, {w}]"
        )
    if isinstance(counts, list):
        why = check_uncompressed_counts(counts, h * w)
        if why:
            raise DataError(f"{where}: malformed RLE ({why})")
        return {"size": [h, w], "counts": compress_counts(counts, h, w)["counts"].decode()}
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts}
    raise DataError(f"{where}: RLE counts must be a string or a list, found {type(counts).__name__}")


def _track_frames(segs: list, video: GTVideo, where: str) -> list:
    size = [video.height, video.width]
    out = segs
    for t, seg in enumerate(segs):
        if seg is None or (type(seg) is dict and seg.get("size") == size and type(seg.get("counts")) is str):
            continue
        if out is segs:
            out = list(segs)  # copy before replacing anything: the caller's records stay as given
        out[t] = _slow_frame(seg, video, f"{where}, segmentations[{t}]")
    return out


def load_predictions(
    predictions: str | Path | Sequence[Mapping], gt: GroundTruth
) -> dict[int, list[PredTrack]]:
    """Parse and check a prediction list against the GT; return the tracks per video id."""
    source = PRED_SOURCE_DEFAULT
    if isinstance(predictions, (str, Path)):
        source = str(predictions)
        predictions = load_json(Path(predictions), "prediction")
    if not isinstance(predictions, Sequence) or isinstance(predictions, (str, bytes)):
        raise DataError(f"{source}: expected a JSON list of predicted tracks")
    videos = {v.video_id: v for v in gt.videos}
    known_categories = {c for c, _ in gt.categories}
    per_video: dict[int, list[PredTrack]] = {v: [] for v in videos}
    for i, entry in enumerate(predictions):
        where = f"{source}: prediction #{i}"
        video_id = int_field(field(entry, "video_id", where), where, "video_id")
        where = f"{source}: prediction #{i} (video_id {video_id})"
        video = videos.get(video_id)
        if video is None:
            raise DataError(f"{where}: unknown video id {video_id} (not in the ground truth)")
        score = field(entry, "score", where)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"{where}: 'score' must be a finite number, found {score!r}")
        category_id = int_field(field(entry, "category_id", where), where, "category_id")
        if category_id not in known_categories:
            raise DataError(f"{where}: unknown category id {category_id}")
        segs = field(entry, "segmentations", where)
        if not isinstance(segs, list) or len(segs) != video.num_frames:
            found = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise DataError(
                f"{where}: 'segmentations' must have one RLE per frame of the video "
                f"({video.num_frames}), found {found}"
            )
        rles = _track_frames(segs, video, where)
        areas = np.zeros(video.num_frames, dtype=np.int64)
        per_video[video_id].append(PredTrack(i, float(score), category_id, rles, areas))
    for video_id, tracks in per_video.items():
        _decode_video(tracks, videos[video_id], source)
    return per_video


def _decode_video(tracks: list[PredTrack], video: GTVideo, source: str) -> None:
    """Check every counts string of one video's predictions in one batch; fill in the areas."""
    counts = [rle["counts"] for track in tracks for rle in track.rles if rle is not None]
    if not counts:
        return
    lengths = [sum(rle is not None for rle in track.rles) for track in tracks]

    def describe(i: int) -> str:
        k = int(np.searchsorted(np.cumsum(lengths), i, side="right"))
        track = tracks[k]
        t = [f for f, rle in enumerate(track.rles) if rle is not None][i - sum(lengths[:k])]
        return f"{source}: prediction #{track.index} (video_id {video.video_id}), segmentations[{t}]"

    areas = checked_areas(counts, [video.height * video.width] * len(counts), describe)
    first = 0
    for track, n in zip(tracks, lengths):
        nonnull = [f for f, rle in enumerate(track.rles) if rle is not None]
        track.areas[nonnull] = areas[first : first + n]
        first += n
