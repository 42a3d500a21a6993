"""The job queue of `avis serve`.

Every upload becomes a `Job` with an id made here (`secrets.token_hex`); a client's id is only
ever used to look a job up in a dict, after a format check, never to build a path. Each job
owns a fresh folder under the server's temporary root. At most `max_jobs` jobs run at once
(a thread pool of that size: memory is bounded by max_jobs x the peak of one job); at most
`max_waiting` more wait in line, past that a new upload is refused (`ServerBusy`). Finished
jobs and their files are deleted `keep_minutes` after they end, and the whole root when the
manager closes.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avis.errors import AvisError

log = logging.getLogger(__name__)

JOB_ID_BYTES = 16
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")  # JOB_ID_BYTES as hex
SWEEP_INTERVAL_S = 30.0
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
MAX_NAME_CHARS = 80


class JobError(AvisError):
    """A job cannot run on this input; the message is shown on the page as it is."""


class ServerBusy(AvisError):
    """Too many jobs are waiting already."""


@dataclass(frozen=True)
class Limits:
    """What one server accepts and how much it runs at once."""

    max_upload_mb: float = 200.0
    max_duration_s: float = 600.0  # 10 minutes of video (600 frames at 1 fps)
    max_jobs: int = 1  # jobs running at the same time
    max_waiting: int = 8  # jobs waiting for a free slot
    keep_minutes: float = 60.0  # finished jobs (and their files) are kept this long

    def __post_init__(self) -> None:
        if self.max_jobs < 1 or self.max_waiting < 0:
            raise ValueError(f"need max_jobs >= 1 and max_waiting >= 0, got {self}")
        if not (self.max_upload_mb > 0 and self.max_duration_s > 0 and self.keep_minutes > 0):
            raise ValueError(f"limits must be positive, got {self}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass(frozen=True)
class MemoryBudget:
    """Per-job memory knobs (MiB); see avis.serve.pipeline."""

    frame_memory_mb: float = 256.0  # decoded frames in RAM, the rest in a temporary file
    feature_budget_mb: float = 256.0  # mask features in RAM before the streaming path is taken


@dataclass(frozen=True)
class JobSettings:
    """The choices a user makes on the page (None: the model's own setting)."""

    threshold: float | None = None
    split_components: bool | None = None
    device: str = "cpu"
    precision: str = "auto"  # "auto" (the device's default) or one of avis.precision.PRECISIONS


@dataclass
class Job:
    id: str
    name: str  # the upload's file name, for display only
    folder: Path  # made by the manager; holds the upload and the outputs
    settings: JobSettings
    state: str = QUEUED
    stage: str = "waiting"
    progress: float = 0.0  # 0..1
    error: str | None = None
    result: dict[str, Any] | None = None  # set by the runner when the job is done
    files: list[str] = field(default_factory=list)  # output file names, inside `folder`
    created: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def upload(self) -> Path:
        return self.folder / "upload"

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)


# runner(job, report): does the work; report(stage, progress) updates the page. Raises JobError
# (or any AvisError) with a message for the user.
Report = Callable[[str, float], None]
Runner = Callable[[Job, Report], None]


def valid_job_id(job_id: str) -> bool:
    return bool(JOB_ID_PATTERN.fullmatch(job_id))


def display_name(name: str | None) -> str:
    """A client's file name reduced to something safe to show (never used as a path)."""
    base = re.split(r"[\\/]", name or "")[-1]
    clean = "".join(ch for ch in base if ch.isprintable()).strip()
    return clean[:MAX_NAME_CHARS] or "video"


class JobManager:
    """Creates, runs, finds and deletes jobs. Thread-safe."""

    def __init__(self, runner: Runner, limits: Limits, temp_root: str | Path | None = None) -> None:
        self.runner = runner
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix="avis-serve-", dir=temp_root))
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # ids of started, unfinished jobs in submission order
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=limits.max_jobs, thread_name_prefix="avis-job")
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._sweep_loop, name="avis-janitor", daemon=True)
        self._janitor.start()
        log.info("job files under %s", self.root)

    # ------------------------------------------------------------------ jobs
    def create(self, name: str | None, settings: JobSettings) -> Job:
        """A new job with its folder (the caller then writes `job.upload` and calls `start`).
        Raises ServerBusy when max_jobs + max_waiting jobs are active already."""
        self.sweep()
        with self._lock:
            active = sum(1 for job in self._jobs.values() if job.active)
            if active >= self.limits.max_jobs + self.limits.max_waiting:
                raise ServerBusy(
                    f"the server is busy ({active} videos are being processed or waiting); "
                    "please try again in a few minutes"
                )
            job_id = secrets.token_hex(JOB_ID_BYTES)
            folder = self.root / job_id
            folder.mkdir()
            job = Job(job_id, display_name(name), folder, settings, stage="uploading")
            self._jobs[job_id] = job
        return job

    def start(self, job: Job) -> None:
        with self._lock:
            job.stage = "waiting for a free slot"
            self._order.append(job.id)  # the pool runs jobs in this order
        self._pool.submit(self._run, job)

    def fail(self, job: Job, message: str) -> None:
        """End a job before it runs (e.g. a refused upload); its files go at once."""
        self._finish(job, FAILED, message)
        shutil.rmtree(job.folder, ignore_errors=True)

    def get(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many jobs wait before this one (0 when it runs or ran)."""
        with self._lock:
            waiting = [i for i in self._order if self._jobs[i].state == QUEUED]
        return waiting.index(job.id) if job.state == QUEUED and job.id in waiting else 0

    def delete(self, job_id: str) -> bool:
        """Forget a finished job and delete its files; False if unknown or still active."""
        job = self.get(job_id)
        if job is None or job.active:
            return False
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def sweep(self) -> int:
        """Delete jobs that ended more than keep_minutes ago; returns how many."""
        horizon = time.monotonic() - self.limits.keep_minutes * 60
        with self._lock:
            old = [j for j in self._jobs.values() if j.ended is not None and j.ended < horizon]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)
        return len(old)

    def close(self) -> None:
        """Stop taking work, wait for running jobs, delete every file."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ internals
    def _run(self, job: Job) -> None:
        if self._stop.is_set():
            return
        job.state, job.stage = RUNNING, "starting"

        def report(stage: str, progress: float) -> None:
            job.stage, job.progress = stage, min(max(float(progress), 0.0), 1.0)

        try:
            self.runner(job, report)
        except AvisError as err:
            self._finish(job, FAILED, str(err))
        except Exception as err:  # noqa: BLE001 - one bad job must not stop the server
            log.exception("job %s (%s) failed", job.id, job.name)
            self._finish(job, FAILED, f"internal error while processing the video ({type(err).__name__})")
        else:
            job.progress = 1.0
            self._finish(job, DONE, None)
        finally:
            job.upload.unlink(missing_ok=True)  # the outputs stay, the upload is not needed

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        with self._lock:
            job.state, job.error, job.ended = state, error, time.monotonic()
            job.stage = "done" if state == DONE else "failed"
            if job.id in self._order:
                self._order.remove(job.id)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL_S):
            self.sweep()
