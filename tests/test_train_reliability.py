"""Fast checks of the training-run safeguards: the run-folder lock (flock and its fallback),
damaged / refused checkpoints on resume, stale temporary files, the ordered shutdown of a
process group, workers that die with their parent, and the channels-last conv weights whose
gradients match their layout (no DDP stride warning)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avis.engine import runlock
from avis.engine.checkpoint import (
    list_checkpoints,
    load_training_checkpoint,
    newest_intact_checkpoint,
    remove_stale_temporaries,
)
from avis.engine.distributed import DistInfo
from avis.engine.runlock import LOCK_NAME, RunLock, RunLockedError
from avis.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_toys import toy_config, toy_trainer  # noqa: E402

SINGLE = DistInfo()


# ---------------------------------------------------------------------- run-folder lock
def test_lock_one_training_per_folder(tmp_path):
    first = RunLock(tmp_path).acquire()
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["pid"] == os.getpid()
    with pytest.raises(RunLockedError, match=f"in use by another training \\(pid {os.getpid()}"):
        RunLock(tmp_path).acquire()  # another open file: flock refuses it, even in-process
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).check()
    first.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # a clean end leaves an empty record
    RunLock(tmp_path).check()
    with RunLock(tmp_path):
        pass


def test_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, caplog):
    """A process killed while holding the lock: the kernel drops the flock; its record says
    who it was, and the next run names it when it takes over."""
    code = (
        "import sys, time; from avis.engine.runlock import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="avis.train"):
        lock = RunLock(tmp_path).acquire()
    assert f"taking over the lock of a training that is no longer running (pid {holder.pid}" in (
        caplog.text
    )
    lock.release()


@pytest.fixture
def no_flock(monkeypatch):
    """A file system without flock: the record alone decides."""
    monkeypatch.setattr(RunLock, "_try_flock", staticmethod(lambda fd: None))


def _write_record(folder: Path, **fields) -> None:
    record = {
        "pid": os.getpid(), "host": runlock.socket.gethostname(), "boot_id": runlock._boot_id(),
        "pid_start": runlock._start_time(os.getpid()), "started": time.time(),
    }  # fmt: skip
    record.update(fields)
    (folder / LOCK_NAME).write_text(json.dumps(record))


def test_lock_fallback_without_flock(tmp_path, no_flock, caplog):
    _write_record(tmp_path)  # this live process
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()
    _write_record(tmp_path, host="elsewhere")  # cannot be checked from here: obeyed, with a hint
    with pytest.raises(RunLockedError, match="if no training runs there, delete"):
        RunLock(tmp_path).check()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout  # fmt: skip
    stale = [
        {"pid": int(dead)},  # the pid is gone
        {"pid_start": "1"},  # the pid now belongs to another process
        {"boot_id": "another-boot"},  # the machine rebooted since
    ]
    for fields in stale:
        _write_record(tmp_path, **fields)
        with caplog.at_level(logging.WARNING, logger="avis.train"):
            RunLock(tmp_path).acquire().release()
        assert "taking over" in caplog.text, fields
        caplog.clear()


# ---------------------------------------------------------------------- checkpoints
def _toy_run(run: Path) -> None:
    torch.set_num_threads(1)
    cfg = toy_config(iterations=8, checkpoint_every=4)
    toy_trainer(cfg, run, SINGLE).train()


def test_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact(tmp_path, caplog):
    _toy_run(tmp_path)
    (older, older_path), (newest, newest_path) = list_checkpoints(tmp_path)
    data = newest_path.read_bytes()
    newest_path.write_bytes(data[: len(data) // 2])  # a crash or a full disk cut it short
    cfg = toy_config(iterations=8, checkpoint_every=4)
    trainer = toy_trainer(cfg, tmp_path, SINGLE)
    with caplog.at_level(logging.WARNING, logger="avis.train"):
        assert trainer.resume()
    assert trainer.iteration == older == 4
    warning = caplog.text
    assert newest_path.name in warning and older_path.name in warning and "cut short" in warning
    trainer.train()  # and the run goes on to the end
    assert list_checkpoints(tmp_path)[-1][0] == 8

    for _, path in list_checkpoints(tmp_path):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from"):
        newest_intact_checkpoint(tmp_path)


def test_a_checkpoint_that_could_run_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoints" / "checkpoint_0000004.pth"
    path.parent.mkdir()
    torch.save({"format": "avis", "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused") as err:
        newest_intact_checkpoint(tmp_path)  # refused: no fallback to an older file
    assert "\n" not in str(err.value)
    assert not marker.exists()
    path.write_bytes(b"garbage that is no zip and no pickle")
    with pytest.raises(CheckpointError, match="damaged or cut short"):
        load_training_checkpoint(path)


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".checkpoint_0000010.pth.1234.tmp"
    stale.write_bytes(b"half")
    keep = tmp_path / "checkpoints" / "notes.tmp"
    keep.write_text("mine")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert keep.exists() and not stale.exists()


# ---------------------------------------------------------------------- processes
SHUTDOWN_WORKER = """
import os, sys, time
import torch.distributed as dist
from avis.engine.distributed import cleanup_distributed, init_distributed
log = sys.argv[1]
info = init_distributed("cpu")
dist.barrier()  # the last collective
if info.rank == 1:
    time.sleep(3)  # the slow rank: rank 0 must not tear the group down before it arrives
with open(log, "a") as f:
    f.write(f"arrive {info.rank}\\n")
cleanup_distributed()
with open(log, "a") as f:
    f.write(f"destroyed {info.rank}\\n")
"""


def test_no_process_destroys_the_group_before_all_have_finished(tmp_path):
    """The ordered shutdown (the cause of the rare hang after model_final.pth): a process
    leaves the group only after every process has returned from the last collective."""
    script = tmp_path / "worker.py"
    script.write_text(SHUTDOWN_WORKER)
    log = tmp_path / "events.txt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(script), str(log)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = log.read_text().split("\n")[:4]
    assert events.index("destroyed 0") > events.index("arrive 1"), events


CHILD = """
import ctypes, os, sys, time
from avis.engine.launch import die_with_parent
die_with_parent()
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
if sys.argv[2] == "gil":  # blocked in native code that holds the GIL (ctypes.PyDLL keeps it)
    ctypes.PyDLL(None).sleep(600)
time.sleep(600)
"""
PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, *sys.argv[1:]], start_new_session=True)
time.sleep(600)
"""


@pytest.mark.parametrize("blocked", ["sleep", "gil"])
@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_a_worker_dies_with_its_parent(tmp_path, watch, blocked):
    """A child in a session of its own (as torchrun starts workers) that called
    die_with_parent() ends when its parent is killed with SIGKILL, also while it is blocked
    in native code that holds the GIL (a thread of the child could not watch then)."""
    child_py, parent_py = tmp_path / "child.py", tmp_path / "parent.py"
    child_py.write_text(CHILD)
    parent_py.write_text(PARENT)
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "AVIS_PARENT_WATCH": watch}
    parent = subprocess.Popen(
        [sys.executable, str(parent_py), str(child_py), str(pid_file), blocked], env=env
    )
    deadline = time.monotonic() + 240  # a bound on a hang, not a speed requirement
    child = 0
    try:
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None, "no child started"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        watchdogs = _watchdogs_of(child, expected=1 if watch == "poll" else 0)
        assert len(watchdogs) == (1 if watch == "poll" else 0), watchdogs
        parent.kill()
        parent.wait()
        while _running(child) or any(_running(w) for w in watchdogs):
            assert time.monotonic() < deadline, f"child {child} outlived its parent ({watch})"
            time.sleep(0.1)
    finally:  # nothing left behind when the test fails
        parent.kill()
        if child and _running(child):
            os.kill(child, signal.SIGKILL)


def test_the_watchdog_ends_with_its_worker(tmp_path):
    """The polling watchdog of a worker that ends on its own does not outlive it."""
    code = "import sys\nfrom avis.engine.launch import die_with_parent\n"
    code += "print(die_with_parent(), flush=True)\nsys.stdin.read()\n"
    env = {**os.environ, "AVIS_PARENT_WATCH": "poll"}
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "poll"
    watchdogs = _watchdogs_of(child.pid, expected=1)
    assert len(watchdogs) == 1, watchdogs
    child.stdin.close()
    assert child.wait(timeout=60) == 0
    deadline = time.monotonic() + 60  # a bound on a hang, not a speed requirement
    while _running(watchdogs[0]):
        assert time.monotonic() < deadline, "the watchdog outlived its worker"
        time.sleep(0.1)


def _watchdogs_of(pid: int, expected: int = 0) -> list[int]:
    """Pids of the `avis.parent_watch` processes that watch process `pid`. A process that has
    just been started can show an empty /proc/<pid>/cmdline for a moment (its exec is still
    being set up: seen on a loaded machine), so until `expected` are found, look again for a
    while (a bound on a race, not a speed requirement)."""
    deadline = time.monotonic() + 30
    while True:
        found = _find_watchdogs(pid)
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _find_watchdogs(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if "avis.parent_watch" in argv and argv[argv.index("avis.parent_watch") + 1] == str(pid):
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


# ---------------------------------------------------------------------- gradient layout
def test_channels_last_resnet_gradients_match_their_weights():
    """The conv weights are stored channels-last, as their kernels return the gradients: no
    gradient has other strides than its weight (DDP's "Grad strides do not match bucket view
    strides" warning), and the outputs equal those of contiguous weights exactly."""
    from avis.models.backbones.resnet import ResNet

    torch.manual_seed(0)
    net = ResNet(depth=18, norm="GN", stem_channels=8)
    reference = ResNet(depth=18, norm="GN", stem_channels=8)
    reference.load_state_dict(net.state_dict())
    for module in reference.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.data = module.weight.data.clone(memory_format=torch.contiguous_format)
    shortcut = net.res3[0].shortcut.weight  # a 1x1 conv: (Co, Ci, 1, 1)
    assert shortcut.stride() == (shortcut.shape[1], 1, shortcut.shape[1], shortcut.shape[1])
    images = torch.randn(2, 3, 64, 64)
    out, expected = net(images), reference(images)
    for name in expected:
        assert torch.equal(out[name], expected[name]), name
    sum(o.sum() for o in out.values()).backward()
    mismatched = [n for n, p in net.named_parameters() if p.grad.stride() != p.stride()]
    assert mismatched == []
    # and the layout survives a state-dict round trip
    again = ResNet(depth=18, norm="GN", stem_channels=8)
    again.load_state_dict(net.state_dict())
    assert again.res3[0].shortcut.weight.stride() == shortcut.stride()


def test_ctrl_c_that_a_library_turns_into_its_own_error_still_ends_as_interrupted(
    monkeypatch, tmp_path, capsys
):
    """PyAV (and other C libraries) can turn a pending SIGINT into an error of their own
    ("immediate exit requested"): the run still ends as interrupted, exit 130, and an error
    without a Ctrl-C stays an error."""
    import signal

    from avis.cli import train as train_cli
    from avis.cli.main import main

    # the handler before the run (SIG_IGN, not Python's default, in a background job of a
    # shell without job control): the CLI must put back whatever was there
    before = signal.getsignal(signal.SIGINT)

    def decode_interrupted(args, run_dir):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            raise RuntimeError("Immediate exit requested") from None
        raise AssertionError("SIGINT was not delivered")

    monkeypatch.setattr(train_cli, "_run", decode_interrupted)
    out = tmp_path / "run"
    assert main(["train", "--output", str(out)]) == 130
    assert "interrupted (SIGINT)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # restored

    def plain_failure(args, run_dir):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(train_cli, "_run", plain_failure)
    assert main(["train", "--output", str(out)]) == 1
    assert "a real bug" in capsys.readouterr().err
