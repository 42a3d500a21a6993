"""Track summary: for each predicted instance its class, score and when it sounds.

An instance "sounds" in a frame when its mask there is not empty (AVIS models segment an
object only while it makes sound). Frame t covers the time [t / fps, (t + 1) / fps), cut at
the media's end when the duration is known (the last frame of a 5.3-s clip covers [5, 5.3)).

Letters: N instances, T frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avis.io.atomic import write_json_atomic

TIME_DECIMALS = 3


@dataclass(frozen=True)
class TrackSummary:
    """One predicted instance track of a video."""

    instance: int  # 1-based position in the prediction (same order as the results records)
    label: int  # class index 0..K-1
    category_id: int  # label + 1, as in the results JSON
    class_name: str
    score: float
    sounding_frames: list[int]  # frame indices with a non-empty mask
    intervals: list[tuple[float, float]]  # [start, end) seconds of each sounding run

    @property
    def sounding_seconds(self) -> float:
        return sum(end - start for start, end in self.intervals)


def sounding_intervals(
    sounding: Sequence[bool] | np.ndarray, fps: float, duration: float | None = None
) -> list[tuple[float, float]]:
    """Runs of True frames -> [start, end) times in seconds, ending at `duration` at most."""
    flags = np.asarray(sounding, dtype=bool)  # (T,)
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    limit = float("inf") if duration is None else float(duration)
    return [
        (round(float(s) / fps, TIME_DECIMALS), round(min(float(e) / fps, limit), TIME_DECIMALS))
        for s, e in zip(starts, ends)
    ]


def summarize_tracks(
    scores: Sequence[float] | np.ndarray,  # (N,)
    labels: Sequence[int] | np.ndarray,  # (N,)
    sounding: np.ndarray,  # (N, T) bool: mask non-empty
    class_names: Sequence[str],
    fps: float,
    duration: float | None = None,  # where the media ends (s); None: T / fps
) -> list[TrackSummary]:
    """One summary per instance, in the given order."""
    sounding = np.asarray(sounding, dtype=bool)  # (N, T)
    summaries = []
    for i, (score, label, flags) in enumerate(zip(scores, labels, sounding)):
        label = int(label)
        name = class_names[label] if 0 <= label < len(class_names) else f"class_{label}"
        summaries.append(
            TrackSummary(
                instance=i + 1,
                label=label,
                category_id=label + 1,
                class_name=name,
                score=float(score),
                sounding_frames=[int(t) for t in np.flatnonzero(flags)],
                intervals=sounding_intervals(flags, fps, duration),
            )
        )
    return summaries


def masks_to_sounding(masks: np.ndarray) -> np.ndarray:
    """(N, T, H, W) bool masks -> (N, T) bool 'mask not empty'."""
    masks = np.asarray(masks)
    return np.asarray(masks.reshape(masks.shape[0], masks.shape[1], -1).any(axis=-1))


def format_intervals(intervals: Sequence[tuple[float, float]]) -> str:
    if not intervals:
        return "silent"
    return ", ".join(f"{start:g}-{end:g}s" for start, end in intervals)


def write_summary(
    summaries: Sequence[TrackSummary],
    path: Path,
    video: str,
    fps: float,
    num_frames: int,
    duration: float | None = None,
) -> Path:
    """Write the summary JSON (atomically): the video, its frame rate, length and duration
    (seconds; T / fps when not known), and every track."""
    path = Path(path)
    tracks = []
    for s in summaries:
        entry = asdict(s)
        entry["intervals"] = [list(iv) for iv in s.intervals]
        entry["sounding_seconds"] = round(s.sounding_seconds, TIME_DECIMALS)
        tracks.append(entry)
    seconds = num_frames / fps if duration is None else duration
    payload = {
        "video": video, "fps": fps, "num_frames": num_frames,
        "duration": round(seconds, TIME_DECIMALS), "tracks": tracks,
    }  # fmt: skip
    return write_json_atomic(path, payload, indent=1)


def summary_table(summaries: Sequence[TrackSummary], title: str):
    """A rich Table of the tracks (imported lazily so this module stays light)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("score", justify="right")
    table.add_column("sounds during")
    table.add_column("frames", justify="right")
    for s in summaries:
        table.add_row(
            str(s.instance),
            escape(s.class_name),
            f"{s.score:.3f}",
            format_intervals(s.intervals),
            str(len(s.sounding_frames)),
        )
    return table
