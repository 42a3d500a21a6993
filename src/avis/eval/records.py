"""Ground truth and predictions for evaluation: loading, validation, typed records.

The GT is AVISeg / YouTube-VIS style: a dict (or JSON file) with `videos`, `annotations` and
`categories`; segmentations are polygon lists, RLE dicts or null. Everything wrong with it is
reported as a DataError naming the file, the entry and the field (predictions: predictions.py).

Letters: T frames of a video.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from avis.data.paths import check_class_name
from avis.errors import DataError
from avis.eval.rle import (
    MAX_FRAME_SIDE,
    check_uncompressed_counts,
    checked_areas,
    compress_counts,
    rles_from_polygon_frames,
)

GT_SOURCE_DEFAULT = "<ground truth records>"


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


def load_json(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; the {what} file must be a JSON file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} file ({err.strerror or err})") from None
    except ValueError as err:  # bad JSON, bad UTF-8, an integer of more than 4300 digits
        raise DataError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a {what} file") from None


def int_field(value, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: field '{name}' must be an integer, found {value!r}")
    return value


def field(entry, key: str, where: str):
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
            except (TypeError, ValueError) as err:
                raise DataError(f"{where}, segmentations[{t}]: {err}") from None
        raise
    for t, rle in zip(polygon_frames, rles):
        out[t] = rle
    return out


def _gt_rle(seg: Mapping, h: int, w: int, where: str) -> dict:
    size, counts = field(seg, "size", where), field(seg, "counts", where)
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
    checked_areas([counts], [h * w], lambda _: where)
    return {"size": [h, w], "counts": counts}


def _parse_video(entry, where: str) -> GTVideo:
    video_id = int_field(field(entry, "id", where), where, "id")
    file_names = field(entry, "file_names", where)
    if not isinstance(file_names, list) or not file_names or not isinstance(file_names[0], str):
        raise DataError(f"{where}: 'file_names' must be a non-empty list of paths")
    height = int_field(field(entry, "height", where), where, "height")
    width = int_field(field(entry, "width", where), where, "width")
    if not (0 < height <= MAX_FRAME_SIDE and 0 < width <= MAX_FRAME_SIDE):
        raise DataError(
            f"{where}: height and width must be 1..{MAX_FRAME_SIDE}, found {height}x{width}"
        )
    name = file_names[0].split("/")[0]
    return GTVideo(video_id, name, len(file_names), height, width, [])


def load_ground_truth(gt: str | Path | Mapping | GroundTruth) -> GroundTruth:
    """Parse and check a GT file or dict. Polygons are rasterised here (once)."""
    if isinstance(gt, GroundTruth):
        return gt
    source = GT_SOURCE_DEFAULT
    if isinstance(gt, (str, Path)):
        source = str(gt)
        gt = load_json(Path(gt), "ground-truth")
    if not isinstance(gt, Mapping):
        raise DataError(f"{source}: expected a JSON object with videos/annotations/categories")
    for key in ("videos", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DataError(f"{source}: missing list '{key}'")

    categories: list[tuple[int, str]] = []
    for i, cat in enumerate(gt["categories"]):
        where = f"{source}: categories[{i}]"
        cat_id = int_field(field(cat, "id", where), where, "id")
        if any(cat_id == c for c, _ in categories):
            raise DataError(f"{where}: duplicate category id {cat_id}")
        categories.append((cat_id, check_class_name(field(cat, "name", where), where)))
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
        ann_id = int_field(field(ann, "id", where), where, "id")
        where = f"{source}: annotations[{i}] (id {ann_id})"
        video_id = int_field(field(ann, "video_id", where), where, "video_id")
        if video_id not in videos:
            raise DataError(f"{where}: unknown video id {video_id}")
        video = videos[video_id]
        if (video_id, ann_id) in seen_ann:
            raise DataError(f"{where}: duplicate annotation id {ann_id} in video {video_id}")
        seen_ann.add((video_id, ann_id))
        category_id = int_field(field(ann, "category_id", where), where, "category_id")
        if category_id not in known_categories:
            raise DataError(f"{where}: unknown category id {category_id}")
        for key, expected in (("height", video.height), ("width", video.width)):
            if key in ann and ann[key] != expected:
                raise DataError(f"{where}: {key} {ann[key]} differs from the video's {expected}")
        segs = field(ann, "segmentations", where)
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
