"""Deep check of a split on disk: what `avis data check` runs.

`load_split` already stops at the first structural error (missing field, wrong length,
unknown id, bad RLE size, path escaping the root, missing frame / feature file, features not
(T, D)). On top of that this reads every frame (size), decodes every mask, compares the stored
areas and boxes with the decoded masks, looks for the WAV files and for frame names out of
numeric order or polygon points outside the frame, and collects every problem instead of
stopping at the first.

Letters: T frames, H x W frame size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from avis.data.masks import area_and_bbox
from avis.data.split import AudioPolicy, AVISegSplit, load_split
from avis.errors import DataError

AREA_TOLERANCE = 0.02  # relative difference between stored and decoded area that is reported
BOX_TOLERANCE = 1.0  # px
TRAILING_NUMBER = re.compile(r"(\d+)(?=\.[^.]*$)")
POLYGON_SLACK = 1.0  # px a polygon point may lie outside the frame before it is reported
MAX_REPORTED = 50  # problems of one kind listed before "... and N more"


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    videos: int = 0
    frames: int = 0
    masks: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _outside(polygons: list, height: int, width: int) -> bool:
    coords = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons if len(p) >= 2]
    if not coords:
        return False
    pts = np.concatenate(coords)
    return bool((pts < -POLYGON_SLACK).any() or (pts[:, 0] > width + POLYGON_SLACK).any() or (pts[:, 1] > height + POLYGON_SLACK).any())


def _frame_order_ok(names: tuple[str, ...]) -> bool:
    numbers = []
    for name in names:
        match = TRAILING_NUMBER.search(PurePosixPath(name).name)
        if match is None:
            return True  # no numbers to order by: the JSON order is the order
        numbers.append(int(match.group(1)))
    return all(a < b for a, b in zip(numbers, numbers[1:]))


def _check_video(split: AVISegSplit, video, report: CheckReport, read_frames: bool) -> None:
    where = f"video {video.id} ('{video.name}')"
    if not _frame_order_ok(video.file_names):
        report.warnings.append(f"{split.root / (split.split + '.json')}: {where}: file_names are not in increasing numeric order")
    if not split.wav_path(video).is_file():
        report.warnings.append(f"{split.wav_path(video)}: soundtrack of {where} not found")
    if read_frames:
        for t in range(video.length):
            try:
                split.load_frames(video, [t])
            except DataError as err:
                report.errors.append(str(err))
    for track in split.tracks[video.id]:
        tw = f"{split.split}.json: annotations (id {track.id}) of {where}"
        for t, seg in enumerate(track.segmentations):
            if seg is None:
                continue
            report.masks += 1
            try:
                area, box = area_and_bbox(seg, video.height, video.width)
            except (ValueError, TypeError) as err:
                report.errors.append(f"{tw}: field 'segmentations[{t}]' cannot be decoded ({err})")
                continue
            if isinstance(seg, list) and _outside(seg, video.height, video.width):
                report.warnings.append(f"{tw}: field 'segmentations[{t}]' has polygon points outside the {video.width}x{video.height} frame (annotated at another size?)")
            if area == 0:
                report.warnings.append(f"{tw}: field 'segmentations[{t}]' is an empty mask (null is expected for an absent instance)")
            given_area = None if track.areas is None else track.areas[t]
            if given_area is not None and abs(given_area - area) > AREA_TOLERANCE * max(area, 1.0):
                report.warnings.append(f"{tw}: field 'areas[{t}]' is {given_area:g}, the mask has {area:g} pixels")
            given_box = None if track.bboxes is None else track.bboxes[t]
            if given_box is not None and max(abs(a - b) for a, b in zip(given_box, box)) > BOX_TOLERANCE:
                report.warnings.append(f"{tw}: field 'bboxes[{t}]' is {list(given_box)}, the mask's box is {box}")


def check_split(
    root: Path | str,
    split: str,
    *,
    audio_policy: AudioPolicy = "pad",
    read_frames: bool = True,
    on_video: Callable[[], None] | None = None,
) -> CheckReport:
    report = CheckReport()
    try:
        loaded = load_split(root, split, audio_policy=audio_policy)
    except DataError as err:
        report.errors.append(str(err))
        return report
    report.videos = len(loaded.videos)
    report.frames = sum(v.length for v in loaded.videos)
    for video in loaded.videos:
        _check_video(loaded, video, report, read_frames)
        n_rows = loaded.audio_lengths[video.id]
        if n_rows != video.length:
            report.warnings.append(f"{loaded.feature_path(video)}: {n_rows} audio rows for {video.length} frames (policy '{audio_policy}')")
        if on_video:
            on_video()
    return report


def summarize(problems: list[str]) -> list[str]:
    """At most MAX_REPORTED lines, then a count of the rest."""
    if len(problems) <= MAX_REPORTED:
        return problems
    return problems[:MAX_REPORTED] + [f"... and {len(problems) - MAX_REPORTED} more"]
