"""`avis predict --online SOURCE`: segment a live stream with bounded latency.

SOURCE is a file, a named pipe, "-" (standard input) or a stream URL PyAV opens. Under
`--out/<name>/` (name: the file stem, "stdin" or "stream"):
  online.jsonl    one JSON record per second, written as soon as it is final (latency L s)
  results.json, summary.json, timeline.png, overlay.mp4   at the end, as `avis predict` does
`--realtime` paces a file at its own speed (a frame is released when it and its second of
audio would have arrived live) and reports how many frames the processing is behind.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

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
        type=float,
        default=DEFAULT_LATENCY,
        help="online: seconds of look-ahead before a frame is final (default %(default)s; "
        "rounded down to whole frames)",
    )
    group.add_argument(
        "--window",
        type=int,
        default=0,
        help="online: frames the video module sees at a time (default: max(2 x the model's "
        "window, latency + 1))",
    )
    group.add_argument(
        "--realtime",
        action="store_true",
        help="online: pace a file at its own speed and report the frames the processing is behind",
    )


def output_name(source: str) -> str:
    from avis.io.stream import STDIN, is_url

    if source == STDIN:
        return "stdin"
    if is_url(source):
        return "stream"
    return Path(source).stem or "stream"


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from avis.errors import AvisError

    if args.videos or args.data is not None:
        raise AvisError("--online takes its SOURCE alone: no video files or --data with it")
    if args.latency < 0 or args.window < 0:
        raise AvisError(f"--latency and --window must be >= 0, got {args.latency} and {args.window}")
    if not args.fps > 0:
        raise AvisError(f"--fps must be positive, got {args.fps}")
    if args.window and args.window < math.floor(args.latency * args.fps + 1e-9) + 1:
        raise AvisError(f"--window ({args.window} frames) must exceed the latency in frames")
    from avis.inference.online import OnlineOptions, OnlinePredictor
    from avis.inference.predictor import VideoPredictor

    predictor = VideoPredictor.from_checkpoint(
        args.weights, preset=args.preset, device=args.device, vggish_weights=args.vggish_weights,
        threshold=args.threshold, split_components=args.split_components,
    )  # fmt: skip
    if args.compile:
        from avis.inference.accelerate import compile_for_inference

        compile_for_inference(predictor.model, parts=("backbone", "pixel_decoder"))
    latency = int(math.floor(args.latency * args.fps + 1e-9))  # frames
    options = OnlineOptions(latency=latency, window=args.window)
    online = OnlinePredictor(predictor, options, fps=args.fps)
    folder = Path(args.out) / output_name(args.online)
    run_online(online, args.online, folder, fps=args.fps, allow_silent=args.allow_silent,
               realtime=args.realtime, overlay=not args.no_overlay, console=Console())  # fmt: skip
    return 0


def run_online(online, source: str, folder: Path, *, fps: float = 1.0, allow_silent: bool = False,
               realtime: bool = False, overlay: bool = True, console=None) -> dict:  # fmt: skip
    """Stream `source` through `online` (an OnlinePredictor), writing `folder/online.jsonl` as
    records become final and the whole-stream outputs at the end. -> a small report dict."""
    import numpy as np
    from rich.console import Console

    from avis.inference.online_records import frame_record
    from avis.io.stream import stream_frames
    from avis.io.video import _FrameStore

    console = console or Console()
    folder.mkdir(parents=True, exist_ok=True)
    extractor = online.predictor.extractor
    stream = stream_frames(source, fps, allow_silent=allow_silent, realtime=realtime)
    frames = _FrameStore(0) if overlay else None  # on disk from the first frame: RAM stays flat
    audio_file = tempfile.TemporaryFile(prefix="avis_online_audio_") if overlay else None  # noqa: SIM115
    jsonl = folder / ONLINE_FILE
    online.reset()
    report: dict[str, float] = {"frames": 0, "realtime": realtime, "max_frames_behind": 0, "final_frames_behind": 0}
    image_size, rate, has_audio = None, None, True
    start = time.perf_counter()

    def behind(processed: int) -> int:
        wall_start = stream.info.wall_start
        if not realtime or wall_start is None:
            return 0
        arrived = math.floor((time.perf_counter() - wall_start - 1.0) * fps) + 1
        return max(0, arrived - processed)

    with jsonl.open("w") as out, console.status("online: waiting for the first frame") as status:
        def write(results, processed: int) -> None:
            for result in results:
                extra = {"frames_behind": behind(processed)} if realtime else None
                if extra:
                    report["max_frames_behind"] = max(report["max_frames_behind"], extra["frames_behind"])
                out.write(json.dumps(frame_record(result, online.class_names, extra), separators=(",", ":")) + "\n")
                out.flush()

        try:  # Ctrl-C ends a live stream: the outputs of what was seen are still written
            for item in stream:
                image_size, rate, has_audio = item.frame.shape[:2], item.sample_rate, item.has_audio
                features = extractor(item.audio, item.sample_rate, 1)[0]
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
                status.update(f"online: frame {item.index + 1} ({item.time:.0f} s), "
                              f"{len(online.linker.live)} live tracks" + (f", {lag} frames behind" if realtime else ""))
        except KeyboardInterrupt:
            if image_size is None:
                raise
            report["interrupted"] = True
            console.print(f"interrupted after {int(report['frames'])} frames: writing the outputs")
        if online.num_frames == report["frames"]:  # else interrupted inside push: state unusable
            write(online.flush(), int(report["frames"]))
    if image_size is None:
        raise AssertionError("the stream yields at least one frame or raises")
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["frames_per_second"] = round(report["frames"] / max(report["seconds"], 1e-9), 3)
    _finish(online, source, folder, jsonl, image_size, fps, frames, audio_file, rate, has_audio, console, report)
    return report


def _finish(online, source, folder, jsonl, image_size, fps, frames, audio_file, rate, has_audio, console, report) -> None:
    import numpy as np

    from avis.inference.online_records import assemble, read_records
    from avis.inference.report import (
        OVERLAY_FILE,
        RESULTS_FILE,
        SUMMARY_FILE,
        TIMELINE_FILE,
        VIDEO_ID,
    )
    from avis.inference.results import write_results
    from avis.inference.summary import summary_table, write_summary
    from avis.inference.timeline import instance_color, write_timeline

    prediction, track_ids = assemble(
        read_records(jsonl), image_size, source=source, fps=fps,
        class_names=online.class_names, audio_features=online.predictor.extractor.name,
    )  # fmt: skip
    summaries = prediction.summaries()
    written = [ONLINE_FILE, RESULTS_FILE, SUMMARY_FILE, TIMELINE_FILE]
    write_results(prediction.records(VIDEO_ID), folder / RESULTS_FILE)
    write_summary(summaries, folder / SUMMARY_FILE, source, fps, prediction.num_frames)
    write_timeline(summaries, prediction.num_frames, fps, folder / TIMELINE_FILE, title=output_name(source))
    if frames is not None and audio_file is not None:
        from avis.io.overlay import OverlayInstance, write_overlay_video

        audio_file.seek(0)
        samples = np.frombuffer(audio_file.read(), dtype=np.float32) if has_audio else None
        audio_file.close()
        instances = [
            OverlayInstance(label=int(label), score=float(score), masks=prediction.track_masks(i),
                            track_id=track_ids[i], color=instance_color(i))  # fmt: skip
            for i, (score, label) in enumerate(zip(prediction.scores, prediction.labels))
        ]
        pictures = frames.array()[: prediction.num_frames]  # (an interrupt may leave one more)
        write_overlay_video(folder / OVERLAY_FILE, pictures, instances, prediction.class_names,
                            audio=samples, sample_rate=rate if samples is not None else None, fps=fps)  # fmt: skip
        written.append(OVERLAY_FILE)
    sounding = [s for s in summaries if s.sounding_frames]
    console.print(summary_table(sounding, f"{output_name(source)} (online): {len(sounding)} sounding tracks"))
    line = f"{report['frames']} frames in {report['seconds']:.1f} s ({report['frames_per_second']:.2f} frames/s)"
    if report["realtime"]:
        line += f"; frames behind: max {report['max_frames_behind']}, at the end {report['final_frames_behind']}"
    console.print(line)
    console.print(f"outputs in {folder}/ : {', '.join(written)}")
