"""The Starlette application of `avis serve`: one page and a small JSON API.

  GET    /                          the page (page.html; no outside assets: a Content-Security-
                                    Policy of 'self' makes the browser refuse any)
  GET    /api/config                limits, devices, precisions and the model's defaults
  POST   /api/jobs?name=&threshold=&split=&device=&precision=
                                    the request body is the video file itself (no multipart
                                    parser needed); ?demo=1 with an empty body runs the
                                    bundled demo clip. -> 202 {"id": ...}
  GET    /api/jobs/{id}             state, stage, progress, place in line, error or result
  GET    /api/jobs/{id}/{file}      overlay.mp4, timeline.png, results.json, summary.json
  DELETE /api/jobs/{id}             delete a finished job's files now

Errors come back as {"error": message} with a 4xx/5xx status; the page shows the message.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from avis.serve.jobs import DONE, Job, JobManager, JobSettings, Limits, MemoryBudget, ServerBusy
from avis.serve.pipeline import OUTPUT_FILES

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
MEDIA_TYPES = {
    "overlay.mp4": "video/mp4",
    "timeline.png": "image/png",
    "results.json": "application/json",
    "summary.json": "application/json",
}
SPLIT_CHOICES = {"": None, "default": None, "on": True, "off": False}


@dataclass(frozen=True)
class ServerInfo:
    """What the page shows about the loaded model."""

    model: str  # checkpoint file name
    class_names: list[str]
    default_threshold: float
    default_split: bool
    devices: list[str]
    default_device: str
    demo_available: bool
    precisions: dict[str, list[str]]  # device -> what may be picked there ("auto" first)
    auto_precisions: dict[str, str]  # device -> what "auto" means there
    default_precision: str  # the server's --precision ("auto" or a mode)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    predictor, limits: Limits, budget: MemoryBudget, temp_root=None, precision: str = "auto"
) -> tuple[Starlette, JobManager]:
    """The app around a loaded VideoPredictor, and its job manager (close it when done; the
    app's shutdown does). `precision`: the default of jobs that do not choose one."""
    from avis.inference.shipped import DEMO_VIDEO, asset_path
    from avis.serve.pipeline import ModelBank, PredictRunner

    bank = ModelBank(predictor, budget)
    manager = JobManager(PredictRunner(bank, limits.max_duration_s), limits, temp_root)
    demo = asset_path(DEMO_VIDEO)
    info = ServerInfo(
        model=Path(predictor.info.source).name,
        class_names=list(predictor.class_names),
        default_threshold=predictor.options.score_threshold,
        default_split=predictor.split is not None,
        devices=bank.devices(),
        default_device=bank.default_device,
        demo_available=demo.is_file(),
        precisions={device: bank.precisions(device) for device in bank.devices()},
        auto_precisions={device: bank.auto_precision(device) for device in bank.devices()},
        default_precision=precision,
    )
    return build_app(manager, info, demo if demo.is_file() else None), manager


def page_html() -> str:
    return resources.files("avis.serve").joinpath("page.html").read_text(encoding="utf-8")


def build_app(manager: JobManager, info: ServerInfo, demo_video: Path | None = None) -> Starlette:
    """The app; `demo_video` (a server-side Path) is what ?demo=1 runs."""
    page = page_html()
    limits = manager.limits

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    async def config(request: Request) -> Response:
        return JSONResponse(
            {
                "model": info.model,
                "classes": info.class_names,
                "default_threshold": info.default_threshold,
                "default_split": info.default_split,
                "devices": info.devices,
                "default_device": info.default_device,
                "precisions": info.precisions,
                "auto_precisions": info.auto_precisions,
                "default_precision": info.default_precision,
                "demo": info.demo_available and demo_video is not None,
                "max_upload_mb": limits.max_upload_mb,
                "max_duration_s": limits.max_duration_s,
                "max_jobs": limits.max_jobs,
                "keep_minutes": limits.keep_minutes,
            }
        )

    async def create_job(request: Request) -> Response:
        try:
            settings = _settings(request, info)
            demo = request.query_params.get("demo") == "1"
            if demo and demo_video is None:
                raise BadRequest("the demo clip is not available on this server", 404)
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limits.max_upload_bytes:
                raise BadRequest(_too_large(limits.max_upload_mb), 413)
            name = "demo.mp4" if demo else request.query_params.get("name")
            try:
                job = manager.create(name, settings)
            except ServerBusy as err:
                raise BadRequest(str(err), 503) from None
        except BadRequest as err:
            return _error(str(err), err.status)
        try:
            if demo_video is not None and demo:
                shutil.copyfile(demo_video, job.upload)
            else:
                await _receive(request, job, limits.max_upload_bytes, limits.max_upload_mb)
        except BadRequest as err:
            manager.fail(job, str(err))
            return _error(str(err), err.status)
        except BaseException:
            manager.fail(job, "the upload was interrupted")
            raise
        manager.start(job)
        return JSONResponse({"id": job.id}, status_code=202)

    async def job_status(request: Request) -> Response:
        job = manager.get(request.path_params["job_id"])
        if job is None:
            return _error("no such job (finished jobs are deleted after a while)", 404)
        return JSONResponse(_status(job, manager))

    async def job_file(request: Request) -> Response:
        job = manager.get(request.path_params["job_id"])
        name = request.path_params["name"]
        if job is None:
            return _error("no such job", 404)
        if name not in OUTPUT_FILES:
            return _error(f"no such file; files are {', '.join(OUTPUT_FILES)}", 404)
        if job.state != DONE or name not in job.files:
            return _error("this job has no results (yet)", 404)
        path = job.folder / name  # a name from OUTPUT_FILES, never the client's string
        if not path.is_file():
            return _error("the file is gone (finished jobs are deleted after a while)", 404)
        download = request.query_params.get("download") == "1"
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[name],
            filename=name if download else None,
            content_disposition_type="attachment" if download else "inline",
        )

    async def delete_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = manager.get(job_id)
        if job is None:
            return _error("no such job", 404)
        if not manager.delete(job_id):
            return _error("the job is still running", 409)
        return JSONResponse({"deleted": job_id})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        manager.close()

    routes = [
        Route("/", index),
        Route("/api/config", config),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status),
        Route("/api/jobs/{job_id}", delete_job, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/{name}", job_file),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _too_large(max_mb: float) -> str:
    return f"the file is larger than this server's upload limit of {max_mb:g} MB"


def _settings(request: Request, info: ServerInfo) -> JobSettings:
    query = request.query_params
    threshold = None
    raw = query.get("threshold", "").strip()
    if raw:
        try:
            threshold = float(raw)
        except ValueError:
            raise BadRequest(f"threshold must be a number between 0 and 1, got {raw!r}") from None
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise BadRequest(f"threshold must be between 0 and 1, got {raw}")
    split = query.get("split", "")
    if split not in SPLIT_CHOICES:
        raise BadRequest(f"split must be one of on, off, default; got {split!r}")
    device = query.get("device", "") or info.default_device
    if device not in info.devices:
        raise BadRequest(f"device must be one of {', '.join(info.devices)}; got {device!r}")
    offered = info.precisions[device]
    precision = query.get("precision", "")
    if not precision:  # the server's default, where this device offers it
        precision = info.default_precision if info.default_precision in offered else "auto"
    if precision not in offered:
        raise BadRequest(f"precision must be one of {', '.join(offered)} on {device}; got {precision!r}")
    return JobSettings(
        threshold=threshold, split_components=SPLIT_CHOICES[split], device=device, precision=precision
    )


async def _receive(request: Request, job: Job, max_bytes: int, max_mb: float) -> None:
    """Stream the request body into the job's upload file, stopping past the size limit."""
    size = 0
    with job.upload.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BadRequest(_too_large(max_mb), 413)
            out.write(chunk)
    if size == 0:
        raise BadRequest("the upload is empty: choose a video file")


def _status(job: Job, manager: JobManager) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "stage": job.stage,
        "progress": round(job.progress, 4),
        "waiting_before": manager.position(job),
        "error": job.error,
        "settings": {
            "threshold": job.settings.threshold,
            "split": job.settings.split_components,
            "device": job.settings.device,
            "precision": job.settings.precision,
        },
    }
    if job.state == DONE:
        out["result"] = job.result
        out["files"] = {name: f"/api/jobs/{job.id}/{name}" for name in job.files}
    return out
