"""One `avis serve` job: an uploaded file -> the outputs of `avis predict`, with progress.

The steps and files are those of `avis predict` / `avis demo` (`avis.inference.report`): decode
at 1 fps, audio features, `VideoPredictor.predict` (component splitting included), then
`results.json`, `summary.json`, `timeline.png` and `overlay.mp4`. Before decoding, the upload is
probed so that a file that is not a video, has no soundtrack or is too long is refused with a
message for the page. Memory per job is bounded: decoded frames beyond `frame_memory_mb` go to
a temporary file and the model takes its memory-bounded (streaming) path when a video's mask
features would exceed `feature_budget_mb` (`VideoPredictor`'s "auto" choice with a smaller
budget than the CLI's, since several jobs may run at once).

Letters: T frames, D audio feature size.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np

from avis.errors import AvisError, MediaError
from avis.inference.predictor import VideoPredictor
from avis.inference.report import OUTPUT_FILES, OVERLAY_FILE, write_overlay, write_tables
from avis.inference.summary import TrackSummary
from avis.inference.timeline import instance_color
from avis.io.video import promised_duration, video_stream
from avis.precision import default_precision, supported_precisions
from avis.serve.jobs import Job, JobError, MemoryBudget, Report

log = logging.getLogger(__name__)

FPS = 1.0  # AVIS samples one frame per second
# share of the progress bar each step takes (the model dominates; measured on the demo clip)
STEPS = {"decode": 0.10, "audio": 0.05, "model": 0.65, "outputs": 0.05, "overlay": 0.15}


@dataclass(frozen=True)
class Probe:
    duration: float | None  # seconds, None when the container does not say
    has_audio: bool


def probe_upload(path: Path, name: str, max_duration_s: float) -> Probe:
    """Check that `path` is a video with sound and not too long; JobError with a page message."""
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise JobError(
            f"{name}: this file is not a video the server can read (is it an mp4, mkv, webm, "
            f"mov or avi file?) [{type(err).__name__}]"
        ) from None
    with container:
        try:  # a cover picture of an audio file is no video
            stream = video_stream(container, name)
        except MediaError:
            raise JobError(f"{name}: this file has no video stream (is it an audio file?)") from None
        if not container.streams.audio:
            raise JobError(
                f"{name}: this video has no audio track; audio-visual segmentation needs the "
                "soundtrack to tell which objects make sound"
            )
        # the video's own length: the container's is its longest stream's (a long soundtrack)
        duration = promised_duration(stream, container)
    if duration is not None and duration > max_duration_s:
        raise JobError(
            f"{name}: the video is {duration:.0f} s long; this server accepts videos up to "
            f"{max_duration_s:.0f} s (cut it shorter, e.g. with ffmpeg -t {max_duration_s:.0f})"
        )
    return Probe(duration, True)


class _CountingFrames:
    """A (T, H, W, 3) frame array that reports how many frames the model has read.

    VideoPredictor.predict reads frames one chunk at a time through slicing (its documented
    lazy-source interface); the count drives the model step of the progress bar."""

    def __init__(self, frames: np.ndarray, on_read) -> None:
        self.frames = frames
        self.shape, self.dtype = frames.shape, frames.dtype
        self.on_read = on_read
        self.read = 0

    def __getitem__(self, index):
        chunk = self.frames[index]
        if not chunk.flags.writeable:  # a memmapped video: torch wants writable arrays
            chunk = np.array(chunk)
        if isinstance(index, slice):
            self.read += len(chunk)
            self.on_read(self.read)
        return chunk


class ModelBank:
    """The loaded model, one copy per device asked for; a VideoPredictor per job around it
    (precision is the predictor's autocast setting: no model copy per precision)."""

    def __init__(self, predictor: VideoPredictor, budget: MemoryBudget) -> None:
        self.base = predictor
        self.budget = budget
        self._models = {str(predictor.device): predictor.model}
        self._lock = threading.Lock()

    @property
    def default_device(self) -> str:
        return str(self.base.device)

    def devices(self) -> list[str]:
        """Devices a user may pick: the server's, and cuda when this machine has one."""
        import torch

        found = [self.default_device, "cpu"]
        if torch.cuda.is_available():
            found.append("cuda")
        return list(dict.fromkeys(found))

    @staticmethod
    def precisions(device: str) -> list[str]:
        """Precisions a user may pick on `device`: auto (the device's default) and the modes
        the device supports (`avis.precision.supported_precisions`)."""
        return ["auto", *supported_precisions(device)]

    @staticmethod
    def auto_precision(device: str) -> str:
        """What "auto" means on `device`."""
        return default_precision(device)

    def predictor(
        self, threshold: float | None, split: bool | None, device: str, precision: str = "auto"
    ) -> VideoPredictor:
        if device not in self.devices():
            raise JobError(f"device {device!r} is not available here (choose one of {self.devices()})")
        if precision not in self.precisions(device):
            raise JobError(
                f"precision {precision!r} is not offered on {device} "
                f"(choose one of {', '.join(self.precisions(device))})"
            )
        with self._lock:
            model = self._models.get(device)
            if model is None:
                model = copy.deepcopy(self.base.model).to(device)
                self._models[device] = model
        base = self.base
        return VideoPredictor(
            model, base.config, base.info, extractor=base.extractor, device=device,
            threshold=threshold, split_components=split, streaming="auto",
            feature_budget_mb=self.budget.feature_budget_mb, spill=base.spill, precision=precision,
        )  # fmt: skip


class _ThreadWarnings(logging.Handler):
    """The warnings avis logs from one thread (a job's: jobs run in a thread pool)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            message = record.getMessage()
            if message not in self.messages:
                self.messages.append(message)


@contextmanager
def job_warnings() -> Iterator[list[str]]:
    """The messages of the warnings avis logs in this thread inside the block (a truncated
    upload decoded in part, a soundtrack that ends early): the page shows them with the
    result instead of leaving them in the server's log."""
    handler = _ThreadWarnings()
    logger = logging.getLogger("avis")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


class PredictRunner:
    """The job runner of `avis serve` (a `jobs.Runner`)."""

    def __init__(self, bank: ModelBank, max_duration_s: float) -> None:
        self.bank = bank
        self.max_duration_s = max_duration_s

    def __call__(self, job: Job, report: Report) -> None:
        try:
            with job_warnings() as warnings:
                self._run(job, report)
        except AvisError as err:
            # library errors name the server's file; the page shows the user's file name
            raise JobError(str(err).replace(str(job.upload), job.name)) from None
        if job.result is not None:
            job.result["warnings"] = [w.replace(str(job.upload), job.name) for w in warnings]

    def _run(self, job: Job, report: Report) -> None:
        from avis.io.video import read_video

        settings = job.settings
        predictor = self.bank.predictor(
            settings.threshold, settings.split_components, settings.device, settings.precision
        )
        done = 0.0

        def step(name: str, label: str, within: float = 0.0) -> None:
            report(label, done + STEPS[name] * within)

        step("decode", "checking the video")
        probe_upload(job.upload, job.name, self.max_duration_s)
        step("decode", "decoding frames (1 per second) and sound")
        decoded = read_video(  # max_duration: also timestamps the header does not announce
            job.upload, fps=FPS, frame_memory_mb=self.bank.budget.frame_memory_mb,
            max_duration=self.max_duration_s, keep_stereo=predictor.config.spatial_audio,
        )
        if decoded.duration > self.max_duration_s:  # containers that do not state a duration
            raise JobError(
                f"{job.name}: the video is {decoded.duration:.0f} s long; this server accepts "
                f"videos up to {self.max_duration_s:.0f} s"
            )
        done += STEPS["decode"]
        step("audio", f"audio features ({predictor.extractor.name})")
        features = predictor.audio_input(decoded)  # (T, D [+ B*P])
        done += STEPS["audio"]
        total = decoded.num_frames

        def model_progress(read: int) -> None:
            step("model", f"model: frame {min(read, total)} of {total}", min(read / total, 1.0))

        step("model", f"model: frame 0 of {total}")
        frames = _CountingFrames(decoded.frames, model_progress)
        prediction = predictor.predict((frames, features), fps=FPS, name=job.name)  # type: ignore[arg-type]
        prediction = replace(
            prediction, audio_features=predictor.extractor.name, duration=decoded.duration
        )
        done += STEPS["model"]
        step("outputs", "writing results, summary and timeline")
        folder = job.folder
        *_, summaries = write_tables(prediction, folder, job.name, job.name, FPS, decoded.duration)
        done += STEPS["outputs"]
        step("overlay", "drawing the overlay video")
        write_overlay(prediction, decoded, folder / OVERLAY_FILE)
        job.files = list(OUTPUT_FILES)
        job.result = result_payload(
            summaries, prediction.num_frames, prediction.num_instances, decoded.duration
        )
        job.result["precision"] = predictor.precision  # what "auto" became


def result_payload(
    summaries: list[TrackSummary], num_frames: int, num_instances: int, duration_s: float | None
) -> dict[str, Any]:
    """What the page shows: every instance with its class, score, colour and sounding intervals
    (the video's length is the decoded media's where known, else frames / FPS)."""
    return {
        "num_frames": num_frames,
        "duration_s": duration_s if duration_s is not None else num_frames / FPS,
        "num_instances": num_instances,
        "instances": [
            {
                "instance": s.instance,
                "class_name": s.class_name,
                "score": round(s.score, 4),
                "color": "#{:02x}{:02x}{:02x}".format(*instance_color(s.instance - 1)),
                "intervals": [list(iv) for iv in s.intervals],
                "sounding_frames": len(s.sounding_frames),
            }
            for s in summaries
        ],
    }
