"""Training runs and processes (docs/reliability.md): workers die with their launcher, one
training per run folder, checks before any worker starts, one message per error, Ctrl-C,
damaged and refused checkpoints, an ordered shutdown, and two torchrun "nodes" on this machine.

Every run here is the real `avis train` / `avis predict` command on a tiny generated data set
with a tiny model. Waits for processes to end poll with generous deadlines: they bound a hang,
they are no speed thresholds.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avis.engine.checkpoint import list_checkpoints, load_training_checkpoint
from avis.engine.launch import PARENT_WATCH_ENV
from avis.engine.runlock import LOCK_NAME, RunLock

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_cli import SMALL_MODEL  # noqa: E402

TINY = [
    *SMALL_MODEL,
    "data.short_sides=[32]",
    "data.max_size=32",
    "data.clip_frames=3",
    "batch_size=2",
    "log_every=1",
    "threads=1",
]
DEADLINE = 240.0  # seconds: a bound on a hang, not a speed requirement


# ---------------------------------------------------------------------- helpers
def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": src + (os.pathsep + path if path else ""),
        **extra,
    }


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """`avis ARGS` in the background, stdout + stderr to `log`, in a session of its own."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "avis.cli.main", *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(**env),
            start_new_session=True,
        )


def avis(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "avis.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=DEADLINE * 2,
    )


def train_args(data: Path, run: Path, *options: str) -> list[str]:
    return ["train", "--data", str(data), "--output", str(run), "--no-eval", *options]


def wait_for(condition, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting after {deadline} s: {what}")
        time.sleep(0.2)


def lock_is_free(path: Path) -> bool:
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def metrics_iterations(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


# ---------------------------------------------------------------------- workers and launcher
@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_kill_9_of_the_launcher_ends_its_workers(synth_root, tmp_path, watch):
    """kill -9 of `avis train` (uncatchable): its workers end too (prctl death signal, or the
    polling watchdog process), and a --resume then takes the dead run's lock over, with a
    message."""
    run = tmp_path / "run"
    args = train_args(synth_root, run, *TINY, "iterations=400", "checkpoint_every=2", "processes=2")
    launcher = start(args, tmp_path / "log.txt", **{PARENT_WATCH_ENV: watch})
    wait_for(lambda: list_checkpoints(run), "the first checkpoint")
    workers = [p for p in processes_mentioning(str(run)) if p != launcher.pid]
    assert len(workers) == 2, (workers, (tmp_path / "log.txt").read_text()[-2000:])
    launcher.kill()
    launcher.wait()
    wait_for(lambda: not any(alive(p) for p in workers), "workers after kill -9 of the launcher")
    # soon no process of the dead run holds the folder (data-loader processes forked by a
    # worker share its lock until their own parent watch ends them)
    wait_for(lambda: lock_is_free(run / LOCK_NAME), "the run folder's lock after kill -9")
    if watch == "poll":
        # rank 0 ends either by its watchdog (SIGTERM: the record stays) or, when the other
        # worker's death reaches it first, through the lost-peer error, releasing the lock
        return
    assert (run / LOCK_NAME).read_text()  # SIGTERM from the kernel: the dead run's record stays
    done = list_checkpoints(run)[-1][0]
    resumed = avis(
        train_args(synth_root, run, "--resume", *TINY, f"iterations={done + 2}", "processes=1")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock of a training that is no longer running" in resumed.stderr
    iterations = metrics_iterations(run)
    assert iterations == sorted(set(iterations)) and iterations[-1] == done + 2
    assert (run / LOCK_NAME).read_text() == ""  # released at the end


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_ctrl_c_stops_every_process_with_exit_130(synth_root, tmp_path, processes):
    run = tmp_path / "run"
    args = train_args(
        synth_root, run, *TINY, "iterations=400", "checkpoint_every=2", f"processes={processes}"
    )
    log = tmp_path / "log.txt"
    launcher = start(args, log)
    wait_for(lambda: list_checkpoints(run), "the first checkpoint")
    workers = [p for p in processes_mentioning(str(run)) if p != launcher.pid]
    launcher.send_signal(signal.SIGINT)
    code = launcher.wait(timeout=DEADLINE)
    assert code == 130, log.read_text()[-3000:]
    wait_for(lambda: not any(alive(p) for p in workers), "workers after Ctrl-C")
    text = log.read_text()
    assert "Traceback" not in text and "ChildFailedError" not in text, text[-3000:]
    assert "avis train: interrupted (SIGINT)" in text and "continue with --resume" in text
    newest = list_checkpoints(run)[-1][1]
    assert load_training_checkpoint(newest)["iteration"] == list_checkpoints(run)[-1][0]


# ---------------------------------------------------------------------- checks before workers
def _malicious_checkpoint(run: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = run / "checkpoints" / "checkpoint_0000004.pth"
    path.parent.mkdir(parents=True)
    torch.save({"format": "avis", "model": Payload()}, path)


@pytest.mark.parametrize(
    "case", ["missing data", "output is a file", "unknown key", "batch", "locked", "malicious"]
)
def test_errors_come_before_any_worker_starts_as_one_line(
    synth_root, tmp_path, case, capsys, monkeypatch
):
    """Each mistake: exit 1, one `avis train: error:` line, no traceback, no worker started,
    nothing written, existing files untouched (in-process: the launcher must never be
    reached)."""
    import avis.engine.launch
    from avis.cli.main import main

    def no_launch(*args, **kwargs):
        raise AssertionError("workers were started")

    monkeypatch.setattr(avis.engine.launch, "launch_workers", no_launch)
    run = tmp_path / "run"
    data = synth_root
    extra = ["iterations=2", "processes=2"]
    expected = ""
    marker = tmp_path / "PWNED"
    held = None
    if case == "missing data":
        data, expected = tmp_path / "no_such_data", "annotation file not found"
    elif case == "output is a file":
        run.write_text("precious")
        expected = "is a file, not a folder"
    elif case == "unknown key":
        extra.append("no_such_key=1")
        expected = "unknown key 'no_such_key'"
    elif case == "batch":
        extra.append("batch_size=3")
        expected = "must be a multiple of accumulation"
    elif case == "locked":
        run.mkdir()
        held = RunLock(run).acquire()
        expected = "is in use by another training"
    elif case == "malicious":
        _malicious_checkpoint(run, marker)
        expected = "refused"
    options = ["--resume"] if case == "malicious" else []
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        code = main(train_args(data, run, *options, *TINY, *extra))
    finally:
        if held is not None:
            held.release()
    stderr = capsys.readouterr().err
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("avis train: error:")]
    assert len(errors) == 1 and expected in errors[0], stderr
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written
    if case == "output is a file":
        assert run.read_text() == "precious"
    assert not marker.exists()  # the pickle's payload never ran


@pytest.mark.slow
def test_an_error_inside_the_workers_is_printed_once(synth_root, tmp_path):
    """A problem only the workers can find (frames that exist but cannot be decoded): each
    distinct message once, no torchrun report, exit 1."""
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(synth_root), str(data)], check=True)
    for frame in (data / "train" / "JPEGImages").rglob("*.jpg"):
        frame.write_bytes(b"not a jpeg")
    proc = avis(train_args(data, tmp_path / "run", *TINY, "iterations=2", "processes=2"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("avis train: error:")]
    assert len(errors) == 1 and "cannot read frame" in errors[0], proc.stderr[-3000:]
    messages = [line for line in proc.stderr.splitlines() if "cannot read frame" in line]
    assert len(messages) == len(set(messages)), proc.stderr  # each distinct message once
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr


# ---------------------------------------------------------------------- two nodes on this machine
def _two_nodes(
    data: Path, run: Path, log_dir: Path, *overrides: str, resume: bool = False,
    kill_node: int | None = None,
):  # fmt: skip
    """Two launchers (--nnodes 2, one process each) meeting on localhost, sharing the run
    folder (as on a shared file system); optionally kill -9 one of them after the first
    checkpoint. Returns (launchers, logs)."""
    port = free_port()
    options = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    options += ["--resume"] if resume else []
    launchers, logs = [], []
    for node in (0, 1):
        logs.append(log_dir / f"node{node}{'_resumed' if resume else ''}.txt")
        args = train_args(data, run, *options, "--node-rank", str(node))
        launchers.append(start([*args, *TINY, "processes=1", *overrides], logs[-1]))
    if kill_node is not None:
        wait_for(lambda: list_checkpoints(run), "the first checkpoint of the two nodes")
        launchers[kill_node].kill()
    for launcher, log in zip(launchers, logs):
        try:
            launcher.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            launcher.kill()
            raise AssertionError(f"{log.name} did not end:\n{log.read_text()[-3000:]}") from None
    return launchers, logs


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def one_node_run(synth_root, tmp_path_factory):
    """The reference: 2 processes on one node, 6 iterations."""
    run = tmp_path_factory.mktemp("one_node") / "run"
    proc = avis(
        train_args(synth_root, run, *TINY, "iterations=6", "checkpoint_every=2", "processes=2")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grad strides do not match" not in proc.stderr  # item 7: the DDP warning is gone
    return run


@needs_proc
@pytest.mark.slow
def test_two_nodes_train_like_one(synth_root, tmp_path, one_node_run):
    run = tmp_path / "run"
    launchers, logs = _two_nodes(synth_root, run, tmp_path, "iterations=6", "checkpoint_every=2")
    for launcher, log in zip(launchers, logs):
        assert launcher.returncode == 0, log.read_text()[-3000:]
    expected, got = _weights(one_node_run / "model_final.pth"), _weights(run / "model_final.pth")
    assert set(expected) == set(got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@needs_proc
@pytest.mark.slow
def test_a_node_dies_the_other_stops_and_resume_is_exact(synth_root, tmp_path, one_node_run):
    run = tmp_path / "run"
    extra = ("iterations=400", "checkpoint_every=2", "dist_timeout_minutes=2")
    launchers, logs = _two_nodes(synth_root, run, tmp_path, *extra, kill_node=1)
    assert launchers[0].returncode == 1, logs[0].read_text()[-3000:]
    text = logs[0].read_text()
    assert "avis train: error: lost contact with another training process" in text, text[-3000:]
    assert "Traceback" not in text
    wait_for(lambda: not processes_mentioning(str(run)), "processes of the failed run")
    # resume on two nodes up to iteration 6: the same weights as the uninterrupted run
    done = list_checkpoints(run)[-1][0]
    assert done < 6, "the run got past iteration 6 before the kill: nothing left to resume"
    launchers, logs = _two_nodes(synth_root, run, tmp_path, "iterations=6", resume=True)
    for launcher, log in zip(launchers, logs):
        assert launcher.returncode == 0, log.read_text()[-3000:]
    expected, got = _weights(one_node_run / "model_final.pth"), _weights(run / "model_final.pth")
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@needs_proc
@pytest.mark.slow
def test_a_frozen_node_is_given_up_after_the_collective_timeout(synth_root, tmp_path):
    """A machine that stops answering without closing its connections (all its processes
    stopped with SIGSTOP): the other node stops after `dist_timeout_minutes` (here 12 s) with
    a clear message."""
    run = tmp_path / "run"
    port = free_port()
    options = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    launchers, logs = [], []
    for node in (0, 1):
        logs.append(tmp_path / f"node{node}.txt")
        args = train_args(synth_root, run, *options, "--node-rank", str(node))
        extra = ["processes=1", "iterations=400", "checkpoint_every=2", "dist_timeout_minutes=0.2"]
        launchers.append(start([*args, *TINY, *extra], logs[-1]))
    wait_for(lambda: list_checkpoints(run), "the first checkpoint of the two nodes")
    frozen = [launchers[1].pid, *children(launchers[1].pid)]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert launchers[0].wait(timeout=DEADLINE) == 1, logs[0].read_text()[-3000:]
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGKILL)
        launchers[1].wait()
    text = logs[0].read_text()
    assert "avis train: error: lost contact with another training process" in text, text[-3000:]
    assert "Timed out" in text and "Traceback" not in text
    wait_for(lambda: not processes_mentioning(str(run)), "processes of the frozen run")


@needs_proc
@pytest.mark.slow
def test_sharded_split_prediction_on_two_nodes_equals_one_process(
    synth_root, tmp_path, one_node_run
):
    weights = one_node_run / "model_final.pth"
    common = ["predict", "--data", str(synth_root), "--split", "test", "--weights", str(weights)]
    single = avis([*common, "--threshold", "0", "--out", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr[-3000:]
    port = free_port()
    nodes = []
    for node in (0, 1):
        torchrun = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}",
            "-m", "avis.cli.main", *common, "--threshold", "0", "--out", str(tmp_path / f"n{node}"),
        ]  # fmt: skip
        nodes.append(
            subprocess.Popen(torchrun, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    for proc in nodes:
        out, _ = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, out.decode()[-3000:]
    expected = (tmp_path / "single" / "results.json").read_bytes()
    assert (tmp_path / "n0" / "results.json").read_bytes() == expected
    assert not (tmp_path / "n1" / "results.json").exists()  # rank 0 writes
