"""AVISeg annotation files (YouTube-VIS style JSON): typed records, validation, round trip.

`parse_annotations(obj, source)` checks every field the data layer relies on and raises
`DataError` naming the file (`source`), the entry (e.g. `annotations[3] (id 17)`) and the field.
`annotations_to_json` gives back a JSON-ready dict; parse(to_json(x)) == x.

Letters: T frames of a video, H x W its frame size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from avis.data.masks import Segmentation, decode_segmentation, segmentation_kind
from avis.data.paths import check_class_name, video_folder
from avis.errors import DataError
from avis.eval.rle import MAX_FRAME_SIDE
from avis.io.atomic import write_text_atomic

VIDEO_FIELDS = ("id", "file_names", "length", "height", "width")
TRACK_FIELDS = ("id", "video_id", "category_id", "segmentations")
TRACK_PER_FRAME_FIELDS = ("segmentations", "bboxes", "areas")
CATEGORY_FIELDS = ("id", "name")
BBOX_LEN = 4


@dataclass(frozen=True)
class Category:
    id: int  # dataset id (AVISeg: 1..26)
    name: str


@dataclass(frozen=True)
class VideoRecord:
    id: int
    file_names: tuple[str, ...]  # "<video>/<frame>.jpg", one per frame, in frame order
    height: int
    width: int

    @property
    def name(self) -> str:
        """The video's folder: the first path component of its first file name."""
        return PurePosixPath(self.file_names[0]).parts[0]

    @property
    def length(self) -> int:
        return len(self.file_names)


@dataclass(frozen=True)
class TrackRecord:
    """One instance track: per-frame segmentation (None = not sounding / not visible)."""

    id: int
    video_id: int
    category_id: int
    height: int
    width: int
    segmentations: tuple[Segmentation | None, ...]  # (T,), raw JSON objects, decoded lazily
    bboxes: tuple[tuple[float, float, float, float] | None, ...] | None = None  # (T,) [x,y,w,h]
    areas: tuple[float | None, ...] | None = None  # (T,)
    iscrowd: int = 0

    @property
    def valid(self) -> np.ndarray:
        """(T,) bool: True where the segmentation is not null."""
        return np.array([s is not None for s in self.segmentations], dtype=bool)

    def mask(self, t: int) -> np.ndarray:
        """(H, W) bool mask of frame t (all False where the segmentation is null)."""
        seg = self.segmentations[t]
        if seg is None:
            return np.zeros((self.height, self.width), dtype=bool)
        return decode_segmentation(seg, self.height, self.width)


@dataclass
class Annotations:
    videos: list[VideoRecord]
    tracks: list[TrackRecord]
    categories: list[Category]
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys kept verbatim (info, ...)

    def tracks_by_video(self) -> dict[int, list[TrackRecord]]:
        out: dict[int, list[TrackRecord]] = {v.id: [] for v in self.videos}
        for track in self.tracks:
            out[track.video_id].append(track)
        return out


def _need(entry: dict, names: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, found {type(entry).__name__}")
    for name in names:
        if name not in entry:
            raise DataError(f"{where}: missing field '{name}'")


def _int(entry: dict, name: str, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    value = entry[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{where}: field '{name}' must be an integer, found {value!r}")
    if minimum is not None and value < minimum:
        raise DataError(f"{where}: field '{name}' must be >= {minimum}, found {value}")
    if maximum is not None and value > maximum:
        raise DataError(f"{where}: field '{name}' must be <= {maximum}, found {value}")
    return value


def _parse_video(entry: dict, where: str) -> VideoRecord:
    _need(entry, VIDEO_FIELDS, where)
    names = entry["file_names"]
    video_folder(names, where)  # every name checked: relative, inside the split root
    names = tuple(names)
    length = _int(entry, "length", where, minimum=1)
    if length != len(names):
        raise DataError(f"{where}: field 'length' is {length} but 'file_names' has {len(names)} entries")
    return VideoRecord(
        id=_int(entry, "id", where),
        file_names=names,
        height=_int(entry, "height", where, minimum=1, maximum=MAX_FRAME_SIDE),
        width=_int(entry, "width", where, minimum=1, maximum=MAX_FRAME_SIDE),
    )


def _per_frame(entry: dict, name: str, length: int, where: str) -> list | None:
    if name not in entry or entry[name] is None:
        return None
    values = entry[name]
    if not isinstance(values, list) or len(values) != length:
        found = len(values) if isinstance(values, list) else type(values).__name__
        raise DataError(f"{where}: field '{name}' must have one entry per frame ({length}), found {found}")
    return values


def _bbox(box: list[Any]) -> tuple[float, float, float, float]:
    """[x, y, w, h] as floats (the caller checked that `box` has BBOX_LEN entries)."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, w, h)


def _parse_track(entry: dict, where: str, videos: dict[int, VideoRecord], category_ids: set[int]) -> TrackRecord:
    _need(entry, TRACK_FIELDS, where)
    video_id = _int(entry, "video_id", where)
    if video_id not in videos:
        raise DataError(f"{where}: field 'video_id' {video_id} is not the id of any video")
    category_id = _int(entry, "category_id", where)
    if category_id not in category_ids:
        raise DataError(f"{where}: field 'category_id' {category_id} is not one of the categories {sorted(category_ids)}")
    video = videos[video_id]
    height = entry.get("height", video.height)
    width = entry.get("width", video.width)
    if (height, width) != (video.height, video.width):
        raise DataError(f"{where}: fields 'height'/'width' are {height}x{width} but video {video_id} is {video.height}x{video.width}")
    segs = _per_frame(entry, "segmentations", video.length, where)
    if segs is None:
        raise DataError(f"{where}: field 'segmentations' must be a list with one entry per frame ({video.length}), found null")
    for t, seg in enumerate(segs):
        try:
            kind = segmentation_kind(seg)
        except ValueError as err:
            raise DataError(f"{where}: field 'segmentations[{t}]': {err}") from None
        if kind == "rle" and [int(v) for v in seg["size"]] != [video.height, video.width]:
            raise DataError(f"{where}: field 'segmentations[{t}]': mask size {list(seg['size'])} != video size [{video.height}, {video.width}]")
    raw_bboxes = _per_frame(entry, "bboxes", video.length, where)
    bboxes: tuple[tuple[float, float, float, float] | None, ...] | None = None
    if raw_bboxes is not None:
        for t, box in enumerate(raw_bboxes):
            if box is not None and (not isinstance(box, list) or len(box) != BBOX_LEN):
                raise DataError(f"{where}: field 'bboxes[{t}]' must be [x, y, w, h] or null, found {box!r}")
        bboxes = tuple(None if b is None else _bbox(b) for b in raw_bboxes)
    raw_areas = _per_frame(entry, "areas", video.length, where)
    areas: tuple[float | None, ...] | None = None
    if raw_areas is not None:
        areas = tuple(None if a is None else float(a) for a in raw_areas)
    return TrackRecord(
        id=_int(entry, "id", where), video_id=video_id, category_id=category_id,
        height=height, width=width, segmentations=tuple(segs), bboxes=bboxes, areas=areas,
        iscrowd=int(entry.get("iscrowd", 0)),
    )  # fmt: skip


def _unique(ids: list[int], what: str, source: str) -> None:
    seen: set[int] = set()
    for i, value in enumerate(ids):
        if value in seen:
            raise DataError(f"{source}: {what}[{i}]: field 'id' {value} is used twice")
        seen.add(value)


def parse_annotations(obj: Any, source: str = "<annotations>") -> Annotations:
    """Typed, validated records of a loaded annotation JSON object."""
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a JSON object at the top, found {type(obj).__name__}")
    for key in ("videos", "annotations", "categories"):
        if key not in obj:
            raise DataError(f"{source}: missing top-level field '{key}'")
        if not isinstance(obj[key], list):
            raise DataError(f"{source}: top-level field '{key}' must be a list")
    categories = []
    for i, entry in enumerate(obj["categories"]):
        where = f"{source}: categories[{i}]"
        _need(entry, CATEGORY_FIELDS, where)
        categories.append(Category(id=_int(entry, "id", where), name=check_class_name(entry["name"], where)))
    _unique([c.id for c in categories], "categories", source)
    videos = []
    for i, entry in enumerate(obj["videos"]):
        videos.append(_parse_video(entry, f"{source}: videos[{i}] (id {_entry_id(entry)})"))
    _unique([v.id for v in videos], "videos", source)
    names: dict[str, int] = {}
    for video in videos:
        if video.name in names:
            raise DataError(f"{source}: videos with ids {names[video.name]} and {video.id} share the folder '{video.name}'")
        names[video.name] = video.id
    by_id = {v.id: v for v in videos}
    cat_ids = {c.id for c in categories}
    tracks = [
        _parse_track(entry, f"{source}: annotations[{i}] (id {_entry_id(entry)})", by_id, cat_ids)
        for i, entry in enumerate(obj["annotations"])
    ]
    _unique([t.id for t in tracks], "annotations", source)
    extra = {k: v for k, v in obj.items() if k not in ("videos", "annotations", "categories")}
    return Annotations(videos=videos, tracks=tracks, categories=categories, extra=extra)


def _entry_id(entry: object) -> object:
    return entry.get("id", "?") if isinstance(entry, dict) else "?"


def annotations_to_json(ann: Annotations) -> dict[str, Any]:
    """The JSON object of an annotation file (YouTube-VIS / AVISeg layout)."""
    videos = [
        {"id": v.id, "file_names": list(v.file_names), "length": v.length, "height": v.height, "width": v.width}
        for v in ann.videos
    ]
    tracks = []
    for t in ann.tracks:
        entry: dict[str, Any] = {
            "id": t.id, "video_id": t.video_id, "category_id": t.category_id, "iscrowd": t.iscrowd,
            "height": t.height, "width": t.width, "segmentations": list(t.segmentations),
        }  # fmt: skip
        if t.bboxes is not None:
            entry["bboxes"] = [None if b is None else list(b) for b in t.bboxes]
        if t.areas is not None:
            entry["areas"] = list(t.areas)
        tracks.append(entry)
    categories = [{"id": c.id, "name": c.name} for c in ann.categories]
    return {**ann.extra, "videos": videos, "annotations": tracks, "categories": categories}


def read_annotations(path: Path) -> Annotations:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be an annotation file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the annotation file ({err})") from None
    except ValueError as err:  # an integer of more than 4300 digits (int_max_str_digits)
        raise DataError(f"{path}: not valid JSON ({err})") from None
    return parse_annotations(obj, str(path))


def write_annotations(path: Path, ann: Annotations | dict[str, Any]) -> None:
    """Write deterministically (sorted keys, compact separators) and atomically."""
    obj = annotations_to_json(ann) if isinstance(ann, Annotations) else ann
    write_text_atomic(path, json.dumps(obj, sort_keys=True, separators=(",", ":")))


def decode_track(track: TrackRecord) -> np.ndarray:
    """(T, H, W) bool masks of every frame of a track."""
    return np.stack([track.mask(t) for t in range(len(track.segmentations))])


__all__ = [
    "Annotations", "Category", "TrackRecord", "VideoRecord", "annotations_to_json",
    "decode_segmentation", "decode_track", "parse_annotations", "read_annotations",
    "write_annotations",
]  # fmt: skip
