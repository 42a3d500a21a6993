"""`avis predict --online SOURCE`: segment a live stream with bounded latency.

SOURCE is a file, a named pipe, "-" (standard input) or a stream URL PyAV opens. Under
`--out/<name>/` (name: the file stem, "stdin" or "stream"):
  online.jsonl    one JSON record per second, written as soon as it is final (latency L s)
  results.json, summary.json, timeline.png, overlay.mp4   at the end, as `avis predict` does
`--realtime` paces a file at its own speed (a frame is released when it and its second of
audio would have arrived live) and reports how many frames the processing is behind.

Reliability (docs/reliability.md): arguments, SOURCE and the output folder are checked
before the model loads (`check_arguments`; earlier outputs are kept without --force);
online.jsonl gets one complete line per record, flushed at once, so an interrupted run
leaves valid JSON lines; the final files are written atomically by `avis predict`'s writers,
and a failure while writing them leaves none of this run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

from avis.cli import args as types

ONLINE_FILE = "online.jsonl"
DEFAULT_LATENCY = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("online mode (live streams; docs/predict.md)")
    group.add_argument(
        "--online",
        metavar="SOURCE",
        help="segment a live source frame by frame: a file, a named pipe, '-' (stdin) or a "
        "stream URL; writes online.jsonl as it goes (one record per second)",
    )
    group.add_argument(
        "--latency",
        type=types.latency_seconds,
        default=DEFAULT_LATENCY,
        help=f"online: seconds of look-ahead before a frame is final, 0..{types.MAX_LATENCY_S:g} "
        "(default %(default)s; rounded down to whole frames)",
    )
    group.add_argument(
        "--window",
        type=types.window_frames,
        default=0,
        help=f"online: frames the video module sees at a time, at most {types.MAX_WINDOW_FRAMES} "
        "(default 0: max(2 x the model's window, latency + 1))",
    )
    group.add_argument(
        "--realtime",
        action="store_true",
        help="online: pace a file at its own speed and report the frames the processing is behind",
    )


def output_name(source: str) -> str:
    from avis.io.outputs import STDIN, is_url

    if source == STDIN:
        return "stdin"
    if is_url(source):
        return "stream"
    return Path(source).stem or "stream"


def latency_frames(latency: float, fps: float) -> int:
    return int(math.floor(latency * fps + 1e-9))


def check_arguments(args: argparse.Namespace) -> None:
    """The online part of `avis.cli.predict.check_arguments` (standard library only): the
    options that only the offline mode has, latency and window, SOURCE, the output folder."""
    from avis.errors import AvisError
    from avis.inference.report import OUTPUT_FILES, check_output_folders
    from avis.io.outputs import check_source

    offline_only = [name for name, given in (
        ("--spill-dir", args.spill_dir is not None), ("--no-spill", args.no_spill),
        ("--streaming", args.streaming != "auto"),
    ) if given]  # fmt: skip
    if offline_only:
        raise AvisError(f"{', '.join(offline_only)}: not used by --online (the window bounds its memory)")
    latency = latency_frames(args.latency, args.fps)
    if latency + 1 > types.MAX_WINDOW_FRAMES:
        raise AvisError(f"--latency {args.latency:g} s at --fps {args.fps:g} is {latency} frames; "
                        f"at most {types.MAX_WINDOW_FRAMES - 1} frames")  # fmt: skip
    if args.window and args.window < latency + 1:
        raise AvisError(f"--window ({args.window} frames) must exceed the latency in frames "
                        f"({latency} = --latency {args.latency:g} s x --fps {args.fps:g})")  # fmt: skip
    check_source(args.online)
    folder = Path(args.out) / output_name(args.online)
    check_output_folders([folder], Path(args.out), args.force, names=(ONLINE_FILE, *OUTPUT_FILES),
                         inputs=[Path(args.online)] if Path(args.online).exists() else [])  # fmt: skip


def handle(args: argparse.Namespace) -> int:
    """`avis predict --online` (arguments checked by `avis.cli.predict.check_arguments`)."""
    from rich.console import Console

    from avis.cli.predict import load_predictor
    from avis.inference.online import OnlineOptions, OnlinePredictor

    predictor = load_predictor(args)
    options = OnlineOptions(latency=latency_frames(args.latency, args.fps), window=args.window)
    online = OnlinePredictor(predictor, options, fps=args.fps)
    folder = Path(args.out) / output_name(args.online)
    run_online(online, args.online, folder, fps=args.fps, allow_silent=args.allow_silent,
               realtime=args.realtime, overlay=not args.no_overlay, console=Console())  # fmt: skip
    return 0


class RecordWriter:
    """online.jsonl: each record one complete line, handed to the OS at once (unbuffered, one
    `write` per line), so that whatever ends the process leaves whole lines. The file is
    created (truncating an earlier run's, which the CLI only allows with --force) at the
    first record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.count = 0

    def write(self, record: dict) -> None:
        data = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.count += 1

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_online(online, source: str, folder: Path, *, fps: float = 1.0, allow_silent: bool = False,
               realtime: bool = False, overlay: bool = True, console=None) -> dict:  # fmt: skip
    """Stream `source` through `online` (an OnlinePredictor), writing `folder/online.jsonl` as
    records become final and the whole-stream outputs at the end. -> a small report dict.

    On a failure: nothing of this run is left when no frame was seen (an earlier run's files
    stay); otherwise online.jsonl keeps the records written so far (complete lines) and no
    final file of this run is left (`avis.inference.report` writers are atomic; those written
    before the failure are removed)."""
    from avis.inference.report import OUTPUT_FILES, _remove_partial

    return _remove_partial(folder, _run_online, online, source, folder, fps, allow_silent, realtime,
                           overlay, console, names=OUTPUT_FILES)  # fmt: skip


def _run_online(online, source, folder, fps, allow_silent, realtime, overlay, console) -> dict:
    import numpy as np
    from rich.console import Console
    from rich.markup import escape

    from avis.errors import AvisError, MediaError
    from avis.inference.online_records import frame_record
    from avis.inference.report import OUTPUT_FILES
    from avis.io.stream import stream_frames
    from avis.io.video import AUDIO_WINDOW_S, _FrameStore

    console = console or Console()
    predictor = online.predictor
    stream = stream_frames(source, fps, allow_silent=allow_silent, realtime=realtime,
                           keep_stereo=predictor.config.spatial_audio)  # fmt: skip
    frames = _FrameStore(0) if overlay else None  # on disk from the first frame: RAM stays flat
    audio_file = tempfile.TemporaryFile(prefix="avis_online_audio_") if overlay else None  # noqa: SIM115
    records = RecordWriter(folder / ONLINE_FILE)
    online.reset()
    report: dict[str, float] = {"frames": 0, "realtime": realtime, "max_frames_behind": 0, "final_frames_behind": 0}
    image_size, rate, has_audio = None, None, True
    start = time.perf_counter()

    def behind(processed: int) -> int:
        wall_start = stream.info.wall_start
        if not realtime or wall_start is None:
            return 0
        # a frame has arrived once its second of audio has (AUDIO_WINDOW_S after it starts)
        arrived = math.floor((time.perf_counter() - wall_start - AUDIO_WINDOW_S) * fps) + 1
        return max(0, arrived - processed)

    def write(results, processed: int) -> None:
        for result in results:
            extra = {"frames_behind": behind(processed)} if realtime else None
            if extra:
                report["max_frames_behind"] = max(report["max_frames_behind"], extra["frames_behind"])
            records.write(frame_record(result, online.class_names, extra))

    try:
        with console.status("online: waiting for the first frame") as status:
            try:  # Ctrl-C ends a live stream: the outputs of what was seen are still written
                for item in stream:
                    if image_size is None:  # the source works: this run's folder starts now
                        folder.mkdir(parents=True, exist_ok=True)
                        for name in (ONLINE_FILE, *OUTPUT_FILES):  # an earlier run's (--force)
                            (folder / name).unlink(missing_ok=True)
                    image_size, rate, has_audio = item.frame.shape[:2], item.sample_rate, item.has_audio
                    features = predictor.window_audio_input(item.audio, item.stereo, item.sample_rate)
                    if frames is not None and audio_file is not None:
                        frames.append(item.frame)
                        step = int(round(item.sample_rate / fps))
                        chunk = np.zeros(step, np.float32)
                        chunk[: min(step, len(item.audio))] = item.audio[:step]
                        audio_file.write(chunk.tobytes())
                    write(online.push(item.frame, features), item.index + 1)
                    report["frames"] = item.index + 1
                    lag = behind(item.index + 1)
                    report["final_frames_behind"] = lag
                    status.update(escape(
                        f"online: frame {item.index + 1} ({item.time:.0f} s), {len(online.linker.live)} "
                        "live tracks" + (f", {lag} frames behind" if realtime else "")
                    ))  # fmt: skip
            except KeyboardInterrupt:
                if image_size is None:
                    raise
                report["interrupted"] = True
                console.print(f"interrupted after {int(report['frames'])} frames: writing the outputs")
            if online.num_frames == report["frames"]:  # else interrupted inside push: state unusable
                write(online.flush(), int(report["frames"]))
    except AvisError as err:
        if records.count:
            raise MediaError(f"{err}; {folder / ONLINE_FILE} keeps the {records.count} records written "
                             "before (no final outputs)") from err  # fmt: skip
        raise
    finally:
        records.close()
    if image_size is None:
        raise AssertionError("the stream yields at least one frame or raises")
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["frames_per_second"] = round(report["frames"] / max(report["seconds"], 1e-9), 3)
    duration = None if report.get("interrupted") else stream.info.duration
    _finish(online, source, folder, image_size, fps, frames, audio_file, rate, has_audio,
            duration, stream.info.start_time, console, report)  # fmt: skip
    return report


def _finish(online, source, folder, image_size, fps, frames, audio_file, rate, has_audio, duration,
            start_time, console, report) -> None:  # fmt: skip
    """The whole-stream outputs, through `avis predict`'s writers (atomic; times end where the
    media ends: `duration`, None when the stream was interrupted)."""
    from dataclasses import replace

    import numpy as np
    from rich.markup import escape

    from avis.inference.online_records import assemble, read_records
    from avis.inference.report import (
        OVERLAY_FILE,
        RESULTS_FILE,
        SUMMARY_FILE,
        TIMELINE_FILE,
        write_overlay_frames,
        write_tables,
    )
    from avis.inference.summary import summary_table
    from avis.io.outputs import STDIN, is_url

    prediction, track_ids = assemble(
        read_records(folder / ONLINE_FILE), image_size, source=source, fps=fps,
        class_names=online.class_names, audio_features=online.predictor.extractor.name,
    )  # fmt: skip
    if duration is not None:
        duration = min(duration, prediction.num_frames / fps)
    prediction = replace(prediction, duration=duration)
    written = [ONLINE_FILE, RESULTS_FILE, SUMMARY_FILE, TIMELINE_FILE]
    title = output_name(source)
    *_, summaries = write_tables(prediction, folder, source, title, fps, duration)
    if frames is not None and audio_file is not None:
        audio, sample_rate = None, None
        end = duration if duration is not None else prediction.num_frames / fps
        path = Path(source)
        if has_audio and source != STDIN and not is_url(source) and path.is_file() and start_time is not None:
            from avis.io.video import read_aligned_audio

            # a file: its soundtrack with every channel, as `avis predict` writes it (read again;
            # what it lacks the stream has reported already: no second warning)
            video_log = logging.getLogger("avis.io.video")
            quiet, video_log.disabled = video_log.disabled, True
            try:
                sound = read_aligned_audio(path, start_time, end)
            finally:
                video_log.disabled = quiet
            if sound is not None:
                audio, sample_rate = sound
        if audio is None and has_audio:  # a pipe or a URL: the mono mix that streamed through
            audio_file.seek(0)
            audio, sample_rate = np.frombuffer(audio_file.read(), dtype=np.float32), rate
        audio_file.close()
        pictures = frames.array()[: prediction.num_frames]  # (an interrupt may leave one more)
        write_overlay_frames(prediction, pictures, folder / OVERLAY_FILE, audio=audio,
                             sample_rate=sample_rate, duration=duration, track_ids=track_ids)  # fmt: skip
        written.append(OVERLAY_FILE)
    sounding = [s for s in summaries if s.sounding_frames]
    console.print(summary_table(sounding, escape(f"{title} (online): {len(sounding)} sounding tracks")))
    line = f"{report['frames']} frames in {report['seconds']:.1f} s ({report['frames_per_second']:.2f} frames/s)"
    if report["realtime"]:
        line += f"; frames behind: max {report['max_frames_behind']}, at the end {report['final_frames_behind']}"
    console.print(line)
    console.print(f"outputs in {folder}/ : {', '.join(written)}", markup=False)
