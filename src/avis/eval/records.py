"""Ground truth and predictions for evaluation: loading, validation, typed records.

Inputs are AVISeg / YouTube-VIS style: a GT dict (or JSON file) with `videos`, `annotations`,
`categories`, and a prediction list (or JSON file) of `{video_id, score, category_id,
segmentations}` with one compressed RLE (or null) per frame. Everything wrong with them is
reported as a DataError naming the file, the entry and the field.

Letters: T frames of a video.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from avis.errors import DataError
from avis.eval.rle import (
    check_compressed_counts,
    check_uncompressed_counts,
    compress_counts,
    rles_from_polygon_frames,
)

GT_SOURCE_DEFAULT = "<ground truth records>"
PRED_SOURCE_DEFAULT = "<prediction records>"


@dataclass
class GTTrack:
    """One annotated instance track. `rles[t]` is None where the GT segmentation is null."""

    ann_id: int
    category_id: int
    iscrowd: bool
    areas_field: list | None  # the annotation's `areas` list as given (None if absent)
    rles: list[dict | None]  # (T,) compressed RLE dicts


@dataclass
class GTVideo:
    video_id: int
    name: str  # folder part of file_names[0]; videos are evaluated in sorted name order
    num_frames: int
    height: int
    width: int
    tracks: list[GTTrack]  # in file order


@dataclass
class GroundTruth:
    videos: list[GTVideo]  # in file order
    categories: list[tuple[int, str]]  # (id, name) in file order
    source: str = GT_SOURCE_DEFAULT


@dataclass
class PredTrack:
    index: int  # position in the prediction list
    score: float
    category_id: int
    rles: list[dict | None]  # (T,) compressed RLE dicts (counts: str) or None


def _load_json(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _int(value, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: field '{field}' must be an integer, found {value!r}")
    return value


def _field(entry, key: str, where: str):
    if not isinstance(entry, Mapping):
        raise DataError(f"{where}: expected an object, found {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{where}: missing field '{key}'")
    return entry[key]


def _gt_track_rles(segs: list, video: GTVideo, where: str) -> list[dict | None]:
    """One GT track's frames -> compressed RLE (bytes counts) or None per frame.

    Null and empty lists are absence; polygon lists are rasterised (all of the track's polygons
    in one pycocotools call); RLE dicts are checked and compressed.
    """
    h, w = video.height, video.width
    out: list[dict | None] = [None] * len(segs)
    polygon_frames: list[int] = []
    for t, seg in enumerate(segs):
        if seg is None or (isinstance(seg, list) and len(seg) == 0):
            continue
        if isinstance(seg, list):
            for poly in seg:
                if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                    raise DataError(
                        f"{where}, segmentations[{t}]: a polygon must be a list of an even "
                        "number (>= 6) of coordinates"
                    )
            polygon_frames.append(t)
        elif isinstance(seg, Mapping):
            out[t] = _gt_rle(seg, h, w, f"{where}, segmentations[{t}]")
        else:
            raise DataError(
                f"{where}, segmentations[{t}]: expected null, a polygon list or an RLE dict"
            )
    try:
        rles = rles_from_polygon_frames([segs[t] for t in polygon_frames], h, w)
    except (TypeError, ValueError):
        for t in polygon_frames:  # find the culprit
            try:
                rles_from_polygon_frames([segs[t]], h, w)
            except (TypeError, ValueError):
                raise DataError(
                    f"{where}, segmentations[{t}]: polygon coordinates must be numbers"
                ) from None
        raise
    for t, rle in zip(polygon_frames, rles):
        out[t] = rle
    return out


def _gt_rle(seg: Mapping, h: int, w: int, where: str) -> dict:
    size, counts = _field(seg, "size", where), _field(seg, "counts", where)
    if not isinstance(size, (list, tuple)) or list(size) != [h, w]:
        raise DataError(f"{where}: RLE size {size} differs from the video's [{h}, {w}]")
    if isinstance(counts, list):
        why = check_uncompressed_counts(counts, h * w)
        if why:
            raise DataError(f"{where}: malformed RLE ({why})")
        return compress_counts(counts, h, w)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise DataError(f"{where}: RLE counts must be a string or a list of run lengths")
    check_compressed_counts([counts], [h * w], lambda _: where)
    return {"size": [h, w], "counts": counts}


def _parse_video(entry, where: str) -> GTVideo:
    video_id = _int(_field(entry, "id", where), where, "id")
    file_names = _field(entry, "file_names", where)
    if not isinstance(file_names, list) or not file_names or not isinstance(file_names[0], str):
        raise DataError(f"{where}: 'file_names' must be a non-empty list of paths")
    height = _int(_field(entry, "height", where), where, "height")
    width = _int(_field(entry, "width", where), where, "width")
    if height <= 0 or width <= 0:
        raise DataError(f"{where}: height and width must be positive, found {height}x{width}")
    name = file_names[0].split("/")[0]
    return GTVideo(video_id, name, len(file_names), height, width, [])


def load_ground_truth(gt: str | Path | Mapping | GroundTruth) -> GroundTruth:
    """Parse and check a GT file or dict. Polygons are rasterised here (once)."""
    if isinstance(gt, GroundTruth):
        return gt
    source = GT_SOURCE_DEFAULT
    if isinstance(gt, (str, Path)):
        source = str(gt)
        gt = _load_json(Path(gt), "ground-truth")
    if not isinstance(gt, Mapping):
        raise DataError(f"{source}: expected a JSON object with videos/annotations/categories")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DataError(f"{source}: missing list '{key}'")

    categories: list[tuple[int, str]] = []
    for i, cat in enumerate(gt["categories"]):
        where = f"{source}: categories[{i}]"
        cat_id = _int(_field(cat, "id", where), where, "id")
        if any(cat_id == c for c, _ in categories):
            raise DataError(f"{where}: duplicate category id {cat_id}")
        categories.append((cat_id, str(_field(cat, "name", where))))
    known_categories = {c for c, _ in categories}

    videos: dict[int, GTVideo] = {}
    names: dict[str, int] = {}
    for i, entry in enumerate(gt["videos"]):
        video = _parse_video(entry, f"{source}: videos[{i}]")
        if video.video_id in videos:
            raise DataError(f"{source}: videos[{i}]: duplicate video id {video.video_id}")
        if video.name in names:
            raise DataError(
                f"{source}: videos[{i}] (id {video.video_id}): video name '{video.name}' is "
                f"also used by video id {names[video.name]}"
            )
        videos[video.video_id] = video
        names[video.name] = video.video_id

    seen_ann: set[tuple[int, int]] = set()
    for i, ann in enumerate(gt["annotations"]):
        where = f"{source}: annotations[{i}]"
        ann_id = _int(_field(ann, "id", where), where, "id")
        where = f"{source}: annotations[{i}] (id {ann_id})"
        video_id = _int(_field(ann, "video_id", where), where, "video_id")
        video = videos.get(video_id)
        if video is None:
            raise DataError(f"{where}: unknown video id {video_id}")
        if (video_id, ann_id) in seen_ann:
            raise DataError(f"{where}: duplicate annotation id {ann_id} in video {video_id}")
        seen_ann.add((video_id, ann_id))
        category_id = _int(_field(ann, "category_id", where), where, "category_id")
        if category_id not in known_categories:
            raise DataError(f"{where}: unknown category id {category_id}")
        for key, expected in (("height", video.height), ("width", video.width)):
            if key in ann and ann[key] != expected:
                raise DataError(f"{where}: {key} {ann[key]} differs from the video's {expected}")
        segs = _field(ann, "segmentations", where)
        if not isinstance(segs, list) or len(segs) != video.num_frames:
            found = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise DataError(
                f"{where}: 'segmentations' must have one entry per frame of video {video_id} "
                f"({video.num_frames}), found {found}"
            )
        areas = ann.get("areas")
        if areas is not None and (not isinstance(areas, list) or len(areas) != video.num_frames):
            raise DataError(f"{where}: 'areas' must have one entry per frame ({video.num_frames})")
        rles = _gt_track_rles(segs, video, where)
        iscrowd = bool(ann.get("iscrowd", 0))
        video.tracks.append(GTTrack(ann_id, category_id, iscrowd, areas, rles))
    return GroundTruth(list(videos.values()), categories, source)


def _pred_rle_counts(seg, where: str, video: GTVideo) -> str | None:
    """Check one predicted frame's RLE dict (not its counts string); return the counts string."""
    if seg is None:
        return None
    if not isinstance(seg, Mapping):
        raise DataError(f"{where}: expected an RLE dict {{size, counts}} or null")
    size, counts = _field(seg, "size", where), _field(seg, "counts", where)
    if not isinstance(size, (list, tuple)) or list(size) != [video.height, video.width]:
        raise DataError(
            f"{where}: RLE size {size} differs from the size of video {video.video_id} "
            f"[{video.height}, {video.width}]"
        )
    if not isinstance(counts, str):
        raise DataError(f"{where}: RLE counts must be a compressed string, found {type(counts).__name__}")
    return counts


def load_predictions(
    predictions: str | Path | Sequence[Mapping], gt: GroundTruth
) -> dict[int, list[PredTrack]]:
    """Parse and check a prediction list against the GT; return the tracks per video id.

    Uncompressed RLEs (counts as a list) are compressed here; compressed RLE dicts are kept
    as given (never modified).
    """
    source = PRED_SOURCE_DEFAULT
    if isinstance(predictions, (str, Path)):
        source = str(predictions)
        predictions = _load_json(Path(predictions), "prediction")
    if not isinstance(predictions, Sequence) or isinstance(predictions, (str, bytes)):
        raise DataError(f"{source}: expected a JSON list of predicted tracks")
    videos = {v.video_id: v for v in gt.videos}
    known_categories = {c for c, _ in gt.categories}
    per_video: dict[int, list[PredTrack]] = {v: [] for v in videos}
    for i, entry in enumerate(predictions):
        where = f"{source}: prediction #{i}"
        video_id = _int(_field(entry, "video_id", where), where, "video_id")
        where = f"{source}: prediction #{i} (video_id {video_id})"
        video = videos.get(video_id)
        if video is None:
            raise DataError(f"{where}: unknown video id {video_id} (not in the ground truth)")
        score = _field(entry, "score", where)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"{where}: 'score' must be a finite number, found {score!r}")
        category_id = _int(_field(entry, "category_id", where), where, "category_id")
        if category_id not in known_categories:
            raise DataError(f"{where}: unknown category id {category_id}")
        segs = _field(entry, "segmentations", where)
        if not isinstance(segs, list) or len(segs) != video.num_frames:
            found = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise DataError(
                f"{where}: 'segmentations' must have one RLE per frame of the video "
                f"({video.num_frames}), found {found}"
            )
        rles: list[dict | None] = []
        for t, seg in enumerate(segs):
            if isinstance(seg, Mapping) and isinstance(seg.get("counts"), list):
                frame = f"{where}, segmentations[{t}]"
                _pred_rle_counts({**seg, "counts": ""}, frame, video)
                why = check_uncompressed_counts(seg["counts"], video.height * video.width)
                if why:
                    raise DataError(f"{frame}: malformed RLE ({why})")
                compressed = compress_counts(seg["counts"], video.height, video.width)
                seg = {"size": compressed["size"], "counts": compressed["counts"].decode()}
            elif seg is not None:
                _pred_rle_counts(seg, f"{where}, segmentations[{t}]", video)
            rles.append(seg)
        per_video[video_id].append(PredTrack(i, float(score), category_id, rles))
    for video_id, tracks in per_video.items():
        _check_video_counts(tracks, videos[video_id], source)
    return per_video


def _check_video_counts(tracks: list[PredTrack], video: GTVideo, source: str) -> None:
    """Decode-check every counts string of one video's predictions in one batch."""
    counts: list[str] = []
    origin: list[tuple[int, int]] = []
    for track in tracks:
        for t, rle in enumerate(track.rles):
            if rle is not None:
                counts.append(rle["counts"])
                origin.append((track.index, t))

    def describe(i: int) -> str:
        index, t = origin[i]
        return f"{source}: prediction #{index} (video_id {video.video_id}), segmentations[{t}]"

    check_compressed_counts(counts, [video.height * video.width] * len(counts), describe)
