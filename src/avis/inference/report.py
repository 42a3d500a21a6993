"""Prediction on video files with every output written: what `avis predict` and `avis demo` run.

Per video, under `<out>/<video stem>/`:
  results.json   AVISeg results records (video id 1), readable by `avis eval --pred`
  summary.json   class, score and sounding intervals of each instance
  overlay.mp4    masks drawn on the frames, with the video's soundtrack (all its channels)
  timeline.png   one row per instance, coloured where it sounds
Each file is written atomically; outputs of an earlier run are not overwritten unless
`force` (`check_outputs`, called before the model runs). Times end where the media ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from avis.errors import AvisError
from avis.inference.prediction import Prediction
from avis.inference.results import write_results
from avis.inference.summary import TrackSummary, summary_table, write_summary
from avis.inference.timeline import instance_color, write_timeline

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"
OVERLAY_FILE = "overlay.mp4"
TIMELINE_FILE = "timeline.png"
VIDEO_ID = 1  # the id of a single video in its results JSON
OUTPUT_FILES = (RESULTS_FILE, SUMMARY_FILE, OVERLAY_FILE, TIMELINE_FILE)


@dataclass
class VideoOutputs:
    """Where the outputs of one video went, and its prediction."""

    video: Path
    folder: Path
    results: Path
    summary: Path
    timeline: Path
    overlay: Path | None
    prediction: Prediction


def output_folders(videos: Sequence[Path], out: Path) -> list[Path]:
    """`out/<stem>`; repeated stems get `_2`, `_3`, ... in input order."""
    seen: dict[str, int] = {}
    folders = []
    for video in videos:
        stem = Path(video).stem or "video"
        seen[stem] = seen.get(stem, 0) + 1
        folders.append(out / (stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    return folders


def check_outputs(videos: Sequence[Path], out: Path, force: bool = False) -> None:
    """Raise AvisError (before any work) when an output of these videos exists already (unless
    `force`), is one of the videos, or a folder it needs is a file. Standard library only."""
    check_output_folders(output_folders(videos, Path(out)), Path(out), force, inputs=videos)


def check_output_folders(
    folders: Sequence[Path],
    out: Path,
    force: bool = False,
    *,
    names: Sequence[str] = OUTPUT_FILES,
    inputs: Sequence[Path] = (),
) -> None:
    """`check_outputs` for given folders under `out`, each receiving the files `names`: an
    existing one is kept unless `force`, one that is an input always. Standard library only."""
    from avis.io.outputs import OutputError, check_output_dir, same_file

    check_output_dir(Path(out))
    existing = []
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: is a file; avis predict writes a folder there")
        for name in names:
            for source in inputs:
                if (folder / name).exists() and same_file(folder / name, Path(source)):
                    raise OutputError(f"{folder / name}: an output is also an input ({source}); choose another --out")
        existing += [folder / name for name in names if (folder / name).exists()]
    if existing and not force:
        listed = ", ".join(str(p) for p in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise OutputError(
            f"{len(existing)} output file(s) of an earlier run exist ({listed}); "
            "use --force to overwrite them, or another --out"
        )


def predict_files(
    predictor,
    videos: Sequence[Path],
    out: Path,
    *,
    fps: float = 1.0,
    allow_silent: bool = False,
    overlay: bool = True,
    console: Console | None = None,
    failures: list[tuple[Path, str]] | None = None,
) -> list[VideoOutputs]:
    """Run `predictor` (a VideoPredictor) on each file and write its outputs; print a table each.

    failures: when a list is given, a video that fails with an AvisError (unreadable file, no
    audio, ...) is recorded there as (video, message) and the next video runs; else the error
    propagates. Outputs an earlier run left in a video's folder that this run does not write
    (overlay.mp4 with overlay=False) are removed, so a folder never mixes two runs."""
    console = console or Console()
    done = []
    for video, folder in zip(videos, output_folders(videos, Path(out))):
        try:
            outputs = _remove_partial(folder, _predict_one, predictor, Path(video), folder, fps, allow_silent, overlay, console)
        except AvisError as err:
            if failures is None:
                raise
            failures.append((Path(video), str(err)))
            console.print(f"[red]failed[/red] {escape(f'{video}: {err}')}", highlight=False)
            continue
        sounding = [s for s in outputs.prediction.summaries() if s.sounding_frames]
        title = f"{video.name}: {len(sounding)} sounding of {outputs.prediction.num_instances} instances"
        console.print(summary_table(sounding, escape(title)))
        console.print(f"outputs in {folder}/ : {', '.join(_written(outputs))}", markup=False)
        done.append(outputs)
    return done


def _remove_partial(folder: Path, run, *args, names: Sequence[str] = OUTPUT_FILES):
    """`run(*args)`; if it fails, the output files (`names`) it wrote in `folder` (and the
    folder, when it made it and left it empty) are removed: a video has all its outputs or
    none of this run's."""
    made = not folder.exists()
    before = {name: _stamp(folder / name) for name in names}
    try:
        return run(*args)
    except BaseException:
        for name in names:
            if _stamp(folder / name) != before[name]:
                (folder / name).unlink(missing_ok=True)
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def _written(outputs: VideoOutputs) -> list[str]:
    paths = [outputs.results, outputs.summary, outputs.timeline, outputs.overlay]
    return [p.name for p in paths if p is not None]


def _predict_one(predictor, video: Path, folder: Path, fps, allow_silent, overlay, console) -> VideoOutputs:
    from avis.io.video import read_video

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(escape(f"{video.name}: decode"), total=1)
        decoded = read_video(video, fps=fps, allow_silent=allow_silent, keep_stereo=predictor.config.spatial_audio)
        bar.update(task, completed=1)
        task = bar.add_task(f"audio features ({predictor.extractor.name})", total=1)
        features = predictor.audio_input(decoded)
        bar.update(task, completed=1)
        task = bar.add_task(f"model ({decoded.num_frames} frames)", total=1)
        prediction = predictor.predict((decoded.frames, features), fps=fps, name=str(video))
        prediction = replace(
            prediction, audio_features=predictor.extractor.name, duration=decoded.duration
        )
        bar.update(task, completed=1)
        task = bar.add_task("results, summary, timeline", total=1)
        results, summary, timeline, _ = write_tables(
            prediction, folder, str(video), video.name, fps, decoded.duration
        )
        bar.update(task, completed=1)
        overlay_path = None
        if overlay:
            task = bar.add_task("overlay video", total=1)
            overlay_path = write_overlay(prediction, decoded, folder / OVERLAY_FILE)
            bar.update(task, completed=1)
        else:
            (folder / OVERLAY_FILE).unlink(missing_ok=True)  # an earlier run's: not this one's
    return VideoOutputs(video, folder, results, summary, timeline, overlay_path, prediction)


def write_tables(
    prediction: Prediction, folder: Path, source: str, title: str, fps: float,
    duration: float | None,
) -> tuple[Path, Path, Path, list[TrackSummary]]:  # fmt: skip
    """results.json, summary.json and timeline.png of a prediction in `folder` (intervals end
    at `duration`, the media's length, when known). -> the three paths and the summaries."""
    summaries = prediction.summaries()
    results = write_results(prediction.records(VIDEO_ID), folder / RESULTS_FILE)
    summary = write_summary(
        summaries, folder / SUMMARY_FILE, source, fps, prediction.num_frames, duration
    )
    timeline = write_timeline(
        summaries, prediction.num_frames, fps, folder / TIMELINE_FILE, title=title,
        duration=duration,
    )  # fmt: skip
    return results, summary, timeline, summaries


def write_overlay(prediction: Prediction, decoded, path: Path) -> Path:
    """The overlay mp4 of a prediction on its decoded video (a DecodedVideo): masks drawn,
    the soundtrack with all its channels, both ending where the video ends."""
    from avis.io.video import read_aligned_audio

    # the soundtrack with its own channels (the decoded one is a mono mix for the features)
    sound = read_aligned_audio(decoded.path, decoded.start_time, decoded.duration) if decoded.has_audio else None
    audio, rate = sound if sound is not None else (None, None)
    return write_overlay_frames(prediction, decoded.frames, path, audio=audio, sample_rate=rate,
                                duration=decoded.duration)  # fmt: skip


def write_overlay_frames(
    prediction: Prediction,
    frames,
    path: Path,
    *,
    audio=None,
    sample_rate: int | None = None,
    duration: float | None = None,
    track_ids: Sequence[int] | None = None,
) -> Path:
    """The overlay mp4 of a prediction on its frames ((T, H, W, 3) uint8), with `audio` ((N,)
    or (N, C) float, or None) ending at `duration`; tracks labelled `track_ids` (default 1..N)."""
    from avis.io.overlay import OverlayInstance, write_overlay_video

    instances = [  # masks decoded one frame at a time while drawing
        OverlayInstance(
            label=int(label), score=float(score), masks=prediction.track_masks(i),
            track_id=int(track_ids[i]) if track_ids is not None else i + 1, color=instance_color(i),
        )  # fmt: skip
        for i, (score, label) in enumerate(zip(prediction.scores, prediction.labels))
    ]
    return write_overlay_video(
        path, frames, instances, prediction.class_names, audio=audio,
        sample_rate=sample_rate if audio is not None else None, fps=prediction.fps, duration=duration,
    )  # fmt: skip
