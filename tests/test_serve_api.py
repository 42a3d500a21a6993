"""The `avis serve` HTTP API with a test client and stand-in job runners: limits, ids, queue,
cleanup, the page's offline promise. (The real pipeline: test_serve_pipeline; the browser:
test_serve_browser.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from avis.cli.main import main
from avis.serve.app import CONTENT_SECURITY_POLICY, ServerInfo, build_app
from avis.serve.jobs import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    JobError,
    JobManager,
    Limits,
    display_name,
    valid_job_id,
)
from avis.serve.pipeline import OUTPUT_FILES
from serve_helpers import free_port

INFO = ServerInfo(
    model="model.pth", class_names=["hiss", "ticker"], default_threshold=0.5, default_split=True,
    devices=["cpu"], default_device="cpu", demo_available=True,
    precisions={"cpu": ["auto", "fp32", "bf16"]}, auto_precisions={"cpu": "fp32"}, default_precision="auto",
)  # fmt: skip
WAIT_S = 30.0


def write_outputs(job, report):
    """A stand-in runner: reports progress, writes every output file (content: the upload)."""
    report("model", 0.5)
    data = job.upload.read_bytes()
    for name in OUTPUT_FILES:
        (job.folder / name).write_bytes(name.encode() + b":" + data)
    job.files = list(OUTPUT_FILES)
    job.result = {"num_frames": 1, "num_instances": 0, "instances": []}


def make_client(tmp_path: Path, runner=write_outputs, demo: Path | None = None, **limits):
    manager = JobManager(runner, Limits(**limits), tmp_path)
    return TestClient(build_app(manager, INFO, demo)), manager


def wait_state(client: TestClient, job_id: str, states: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in states:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.01)


def test_page_loads_nothing_from_elsewhere(tmp_path):
    client, manager = make_client(tmp_path)
    with client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    html = response.text
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html) + re.findall(r"url\(([^)]*)\)", html)
    assert all(not re.match(r"\w+:|//", ref) for ref in references), references
    assert "@import" not in html and "fetch(\"http" not in html
    for element in ("file", "run", "demo", "threshold", "split", "device", "progress", "error", "overlay", "timeline", "instances"):
        assert f'id="{element}"' in html, element
    assert not manager.root.exists()  # the app's shutdown closed the manager


def test_config_tells_the_page_limits_and_defaults(tmp_path):
    client, _ = make_client(tmp_path, max_upload_mb=3, max_duration_s=42)
    with client:
        config = client.get("/api/config").json()
    assert config["max_upload_mb"] == 3 and config["max_duration_s"] == 42
    assert config["default_threshold"] == 0.5 and config["devices"] == ["cpu"]
    assert config["demo"] is False  # no demo video given to this app


def test_upload_runs_a_job_and_serves_its_files(tmp_path):
    client, manager = make_client(tmp_path)
    with client:
        response = client.post("/api/jobs?name=../../etc/clip.mp4&threshold=0.25&split=off", content=b"VIDEO")
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert valid_job_id(job_id)
        status = wait_state(client, job_id, (DONE, FAILED))
        assert status["state"] == DONE and status["error"] is None and status["progress"] == 1.0
        assert status["name"] == "clip.mp4"  # the client's path is reduced to a display name
        assert status["settings"] == {"threshold": 0.25, "split": False, "device": "cpu", "precision": "auto"}
        job = manager.get(job_id)
        assert job is not None and job.folder.parent == manager.root
        assert not job.upload.exists()  # the upload goes once the job ends, the outputs stay
        for name, url in status["files"].items():
            got = client.get(url)
            assert got.status_code == 200 and got.content == name.encode() + b":VIDEO"
        attachment = client.get(status["files"]["results.json"] + "?download=1")
        assert attachment.headers["content-disposition"].startswith("attachment")
        assert client.get(f"/api/jobs/{job_id}/upload").status_code == 404
        assert client.get(f"/api/jobs/{job_id}/..%2Fupload").status_code == 404


def test_bad_job_ids_are_not_found(tmp_path):
    client, manager = make_client(tmp_path)
    (manager.root / "secret.txt").write_text("x")
    with client:
        for job_id in ("abc", "0" * 32, "..", "..%2F..%2Fetc", "secret.txt", "A" * 32):
            assert client.get(f"/api/jobs/{job_id}").status_code == 404, job_id
            assert client.get(f"/api/jobs/{job_id}/results.json").status_code == 404, job_id
            assert client.delete(f"/api/jobs/{job_id}").status_code == 404, job_id
    assert manager.get("../secret.txt") is None and not valid_job_id("0" * 31 + "g")


@pytest.mark.parametrize(
    ("query", "body", "status", "message"),
    [
        ("threshold=abc", b"v", 400, "threshold must be a number"),
        ("threshold=1.5", b"v", 400, "between 0 and 1"),
        ("threshold=nan", b"v", 400, "between 0 and 1"),
        ("split=maybe", b"v", 400, "split must be one of"),
        ("device=tpu", b"v", 400, "device must be one of cpu"),
        ("precision=fp64", b"v", 400, "precision must be one of auto, fp32, bf16 on cpu; got 'fp64'"),
        ("precision=tf32", b"v", 400, "precision must be one of auto, fp32, bf16 on cpu; got 'tf32'"),
        ("name=a.mp4", b"", 400, "the upload is empty"),
        ("demo=1", b"", 404, "demo clip is not available"),
    ],
)
def test_bad_requests_get_a_clear_message(tmp_path, query, body, status, message):
    client, manager = make_client(tmp_path)
    with client:
        response = client.post(f"/api/jobs?{query}", content=body)
        assert response.status_code == status and message in response.json()["error"]
        assert [p.name for p in manager.root.iterdir()] == []  # nothing left behind


def test_precision_choice_reaches_the_job_and_the_server_default_applies(tmp_path):
    seen = []

    def record(job, report):
        seen.append(job.settings.precision)
        write_outputs(job, report)

    manager = JobManager(record, Limits(), tmp_path)
    client = TestClient(build_app(manager, replace(INFO, default_precision="bf16")))
    with client:
        config = client.get("/api/config").json()
        assert config["precisions"] == {"cpu": ["auto", "fp32", "bf16"]} and config["default_precision"] == "bf16"
        for query in ("precision=fp32", ""):
            job_id = client.post(f"/api/jobs?name=a.mp4&{query}", content=b"v").json()["id"]
            assert wait_state(client, job_id, (DONE, FAILED))["settings"]["precision"] == seen[-1]
    assert seen == ["fp32", "bf16"]  # an empty choice is the server's --precision


def test_upload_size_limit(tmp_path):
    client, manager = make_client(tmp_path, max_upload_mb=0.001)  # 1048 bytes
    with client:
        response = client.post("/api/jobs?name=big.mp4", content=b"x" * 2000)
        assert response.status_code == 413
        assert "larger than this server's upload limit of 0.001 MB" in response.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(4):
                yield b"x" * 600

        response = client.post("/api/jobs?name=big.mp4", content=chunks())
        assert response.status_code == 413
        assert [p.name for p in manager.root.iterdir()] == []  # the partial upload is deleted
        assert client.post("/api/jobs?name=small.mp4", content=b"x" * 1000).status_code == 202


def test_bounded_concurrency_and_waiting_line(tmp_path):
    release = threading.Event()
    lock = threading.Lock()
    running, peak = [0], [0]

    def blocking(job, report):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            assert release.wait(WAIT_S)
            write_outputs(job, report)
        finally:
            with lock:
                running[0] -= 1

    client, manager = make_client(tmp_path, blocking, max_jobs=2, max_waiting=2)
    with client:
        ids = [client.post("/api/jobs", content=b"v").json()["id"] for _ in range(4)]
        refused = client.post("/api/jobs", content=b"v")
        assert refused.status_code == 503 and "busy" in refused.json()["error"]
        deadline = time.monotonic() + WAIT_S
        while running[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        states = [client.get(f"/api/jobs/{i}").json() for i in ids]
        assert [s["state"] for s in states] == [RUNNING, RUNNING, QUEUED, QUEUED]
        assert [s["waiting_before"] for s in states] == [0, 0, 0, 1]
        release.set()
        assert all(wait_state(client, i, (DONE, FAILED))["state"] == DONE for i in ids)
        assert peak[0] == 2  # never more than max_jobs at once
        assert client.post("/api/jobs", content=b"v").status_code == 202  # room again


def test_failed_jobs_show_their_message_and_the_server_goes_on(tmp_path):
    def runner(job, report):
        if job.upload.read_bytes() == b"bad":
            raise JobError(f"{job.name}: this file is not a video")
        if job.upload.read_bytes() == b"crash":
            raise RuntimeError(f"bug at {job.folder}")
        write_outputs(job, report)

    client, manager = make_client(tmp_path, runner)
    with client:
        bad = client.post("/api/jobs?name=x.mp4", content=b"bad").json()["id"]
        status = wait_state(client, bad, (DONE, FAILED))
        assert status["state"] == FAILED and status["error"] == "x.mp4: this file is not a video"
        assert "files" not in status and client.get(f"/api/jobs/{bad}/results.json").status_code == 404
        crash = client.post("/api/jobs", content=b"crash").json()["id"]
        status = wait_state(client, crash, (DONE, FAILED))
        assert status["error"] == "internal error while processing the video (RuntimeError)"
        assert str(manager.root) not in status["error"]
        good = client.post("/api/jobs", content=b"fine").json()["id"]
        assert wait_state(client, good, (DONE, FAILED))["state"] == DONE


def test_finished_jobs_are_deleted(tmp_path):
    client, manager = make_client(tmp_path, keep_minutes=0.5 / 60)  # half a second
    with client:
        first = client.post("/api/jobs", content=b"v").json()["id"]
        wait_state(client, first, (DONE,))
        folder = manager.root / first
        assert folder.is_dir()
        assert client.delete(f"/api/jobs/{first}").json() == {"deleted": first}
        assert not folder.exists() and client.get(f"/api/jobs/{first}").status_code == 404
        second = client.post("/api/jobs", content=b"v").json()["id"]
        wait_state(client, second, (DONE,))
        assert manager.sweep() == 0  # too recent
        time.sleep(0.6)
        assert manager.sweep() == 1
        assert not (manager.root / second).exists()
        assert client.get(f"/api/jobs/{second}").status_code == 404
        root = manager.root
    assert not root.exists()  # shutdown deletes the whole temporary root


def test_running_jobs_cannot_be_deleted(tmp_path):
    release = threading.Event()
    client, manager = make_client(tmp_path, lambda job, report: release.wait(WAIT_S))
    with client:
        job_id = client.post("/api/jobs", content=b"v").json()["id"]
        assert client.delete(f"/api/jobs/{job_id}").status_code == 409
        release.set()
        wait_state(client, job_id, (DONE, FAILED))
        assert client.delete(f"/api/jobs/{job_id}").status_code == 200


def test_the_demo_clip_is_copied_from_the_server_side(tmp_path):
    demo = tmp_path / "demo_source.mp4"
    demo.write_bytes(b"DEMO")
    client, _ = make_client(tmp_path, demo=demo)
    with client:
        response = client.post("/api/jobs?demo=1&name=/etc/passwd")
        status = wait_state(client, response.json()["id"], (DONE, FAILED))
        assert status["name"] == "demo.mp4"
        assert client.get(status["files"]["summary.json"]).content == b"summary.json:DEMO"


@pytest.mark.parametrize(
    ("name", "shown"),
    [("../../etc/passwd", "passwd"), ("C:\\Users\\me\\clip.mp4", "clip.mp4"), ("a\x00b\nc.mp4", "abc.mp4"),
     ("", "video"), (None, "video"), ("x" * 200, "x" * 80)],
)  # fmt: skip
def test_display_names(name, shown):
    assert display_name(name) == shown


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_jobs >= 1"):
        Limits(max_jobs=0)
    with pytest.raises(ValueError, match="positive"):
        Limits(max_upload_mb=0)


def test_cli_without_the_web_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert main(["serve"]) == 1
    assert "needs the 'web' extra (uvicorn is missing): pip install -e '.[web]'" in capsys.readouterr().err


def test_cli_rejects_a_precision_the_device_does_not_offer(capsys):
    assert main(["serve", "--precision", "tf32"]) == 1  # tf32 is fp32 under another name on CPU
    assert "--precision tf32 is not offered on cpu (choose auto, fp32, bf16" in capsys.readouterr().err


def test_cli_rejects_bad_limits(capsys):
    assert main(["serve", "--max-jobs", "0"]) == 1
    assert "need max_jobs >= 1" in capsys.readouterr().err


def test_cli_serves_and_removes_its_files_on_stop(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "avis.cli.main", "serve", "--port", str(port), "--temp-dir", str(tmp_path)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config") as response:
                    config = json.loads(response.read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "avis serve did not start"
                time.sleep(0.2)
        assert config["model"] == "avism_tiny_synth.pth" and config["demo"] is True
        assert len(list(tmp_path.iterdir())) == 1  # the server's temporary root
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0].decode()
    assert f"open http://127.0.0.1:{port}/" in output
    assert list(tmp_path.iterdir()) == []
