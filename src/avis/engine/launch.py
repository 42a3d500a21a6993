"""Training processes: starting them (torchrun's agent, in this process) and ending them.

`avis train` with `processes > 1` or `--nnodes > 1` runs torchrun's elastic agent inside its
own process (no separate `torchrun` process) and the agent starts the workers
(`python -m avis.cli.main train ...` with RANK / WORLD_SIZE / ... set). So the process the
user started is the launcher, and:

- Workers die with it. torchrun starts workers in sessions of their own, so nothing else would
  stop them when the launcher is killed (kill -9 cannot be caught). Each worker asks the kernel
  for a signal when its parent dies (`prctl(PR_SET_PDEATHSIG, SIGTERM)`, Linux); elsewhere, or
  when `AVIS_PARENT_WATCH=poll`, it starts a watchdog process (`avis.parent_watch`) that polls
  the parent pid twice a second (a process, not a thread: a thread needs the worker's GIL,
  which a worker stuck in native code may never release). Plain
  `torchrun ... -m avis.cli.main train` workers do the same with torchrun as the parent.
- Errors are reported once. A worker that fails with an avis error writes its message to a
  file of the launcher's error folder instead of printing it; the launcher prints each
  distinct message once, without torchrun's "ChildFailedError" report.
- Ctrl-C (or SIGTERM / SIGHUP) reaches the launcher, whose agent stops the workers (they take
  SIGINT / SIGTERM with the default action: they end at once, even inside a collective); the
  launcher then raises `TrainingInterrupted` (exit 128 + signal number, 130 for Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from avis.errors import AvisError
from avis.runtime import scoped_environ

LOG = logging.getLogger("avis.train")

PARENT_PID_ENV = "AVIS_LAUNCHER_PID"  # pid of the agent that started this worker
PARENT_WATCH_ENV = "AVIS_PARENT_WATCH"  # "auto" (prctl on Linux, else polling) or "poll"
ERRORS_ENV = "AVIS_TRAIN_ERRORS"  # folder for the workers' error messages
POLL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
AGENT_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
EXIT_PARENT_GONE = 1
_WATCHDOGS: list[subprocess.Popen] = []  # this worker's parent watchdog (poll mode)


class TrainingInterrupted(Exception):
    """The launcher received SIGINT / SIGTERM / SIGHUP; the workers have been stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass(frozen=True)
class Nodes:
    """Where the processes run: `nnodes` machines, this one `node_rank`, node 0 at master."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None  # None with nnodes == 1: a private rendezvous on localhost
    master_port: int | None = None

    def validate(self) -> None:
        if self.nnodes < 1:
            raise AvisError(f"--nnodes must be >= 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise AvisError(f"--node-rank must be in 0..{self.nnodes - 1}, got {self.node_rank}")
        if self.nnodes > 1 and not self.master_addr:
            raise AvisError("--nnodes > 1 needs --master-addr (the address of node 0)")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise AvisError(f"--master-port must be in 1..65535, got {self.master_port}")


# ---------------------------------------------------------------------- worker side
def die_with_parent(parent: int | None = None) -> str:
    """End this process when its parent ends. Returns the mechanism used ("prctl", "poll").

    `parent`: the expected parent pid (default: $AVIS_LAUNCHER_PID, else the current parent);
    if the parent is already gone (pid 1 or another parent), the process ends now.
    """
    if parent is None:
        parent = int(os.environ.get(PARENT_PID_ENV, "0")) or os.getppid()
    mechanism = "poll"
    if os.environ.get(PARENT_WATCH_ENV, "auto") != "poll" and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                mechanism = "prctl"
    if os.getppid() != parent or os.getppid() == 1:  # died before the request took effect
        _parent_gone(parent)
    if mechanism == "poll":
        # ends when this process does; held so that no "still running" warning is raised
        _WATCHDOGS.append(
            subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "avis.parent_watch",
                    str(os.getpid()),
                    str(parent),
                    str(POLL_SECONDS),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,  # holds none of this process's files (the run folder's lock)
            )
        )
    return mechanism


def _parent_gone(parent: int) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(
            f"avis: the launcher (pid {parent}) is gone: ending process {os.getpid()}\n"
        )
        sys.stderr.flush()
    os._exit(EXIT_PARENT_GONE)


def become_worker() -> str:
    """Set up a torchrun worker: die with the launcher; SIGINT / SIGTERM end it at once."""
    mechanism = die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return mechanism


def report_worker_error(message: str, kind: str = "error") -> bool:
    """Hand the launcher this worker's error message; False when no avis launcher listens.

    kind: "error" (the cause) or "peer" (this process lost another one)."""
    folder = os.environ.get(ERRORS_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    rank = os.environ.get("RANK", "0")
    path = Path(folder) / f"rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": int(rank), "kind": kind, "message": message}))
    os.replace(tmp, path)
    return True


# ---------------------------------------------------------------------- launcher side
def launch_workers(
    worker_args: list[str],
    nproc: int,
    nodes: Nodes = Nodes(),
    *,
    threads: int = 0,
    verbose: bool = False,
) -> None:
    """Run `python -m avis.cli.main <worker_args>` in `nproc` processes on this node.

    Returns when all workers succeeded; raises AvisError (the workers' messages, once each)
    when one failed, TrainingInterrupted on SIGINT / SIGTERM / SIGHUP."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    nodes.validate()
    argv = [f"--nproc-per-node={nproc}", f"--nnodes={nodes.nnodes}", "--max-restarts=0"]
    if nodes.master_addr:
        argv += [
            f"--node-rank={nodes.node_rank}",
            f"--master-addr={nodes.master_addr}",
            f"--master-port={nodes.master_port or 29500}",
        ]
    argv += ["--module", "avis.cli.main", *worker_args]
    args = get_args_parser().parse_args(argv)
    if not nodes.master_addr:  # a private rendezvous on a free local port (torchrun --standalone)
        args.rdzv_backend, args.rdzv_endpoint = "c10d", "localhost:0"
        args.rdzv_id = str(uuid.uuid4())
    errors = Path(tempfile.mkdtemp(prefix="avis-train-errors-"))
    env = {PARENT_PID_ENV: str(os.getpid()), ERRORS_ENV: str(errors)}
    env["OMP_NUM_THREADS"] = str(threads) if threads > 0 else os.environ.get("OMP_NUM_THREADS", "1")
    if nodes.nnodes > 1:
        LOG.info(
            "node %d of %d: %d processes; meeting the other nodes at %s:%s",
            nodes.node_rank, nodes.nnodes, nproc, nodes.master_addr, nodes.master_port or 29500,
        )  # fmt: skip
    else:
        LOG.info("starting %d training processes", nproc)
    with scoped_environ(env), _agent_signals(), _quiet_agent(verbose):
        try:
            config, entrypoint, entry_args = config_from_args(args)
            elastic_launch(config=config, entrypoint=entrypoint)(*entry_args)
        except ChildFailedError as err:
            raise AvisError(_failure_message(err, errors)) from None
        except SignalException as err:
            raise TrainingInterrupted(int(err.sigval)) from None
        except KeyboardInterrupt:
            raise TrainingInterrupted(int(signal.SIGINT)) from None
        except AvisError:
            raise
        except Exception as err:  # rendezvous / store failures (other nodes unreachable)
            where = (
                f" at {nodes.master_addr}:{nodes.master_port or 29500}" if nodes.master_addr else ""
            )
            raise AvisError(
                f"could not start or join the training processes{where}: {_first_line(err)}"
            ) from None
        finally:
            for path in errors.iterdir():
                path.unlink(missing_ok=True)
            errors.rmdir()


def _failure_message(err, errors: Path) -> str:
    reports = []
    for path in sorted(errors.glob("rank*.json")):
        with contextlib.suppress(OSError, ValueError):
            reports.append(json.loads(path.read_text()))
    causes = [r for r in reports if r.get("kind") == "error"] or reports
    messages: list[str] = []
    for report in sorted(causes, key=lambda r: r.get("rank", 0)):
        if report.get("message") and report["message"] not in messages:
            messages.append(report["message"])
    if messages:
        return "\n".join(messages)
    parts = []
    for rank, failure in sorted(err.failures.items()):
        code = failure.exitcode
        how = f"exited with code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name}"
        parts.append(f"training process rank {rank} {how}")
    return "; ".join(parts) + " (its messages are above)"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextlib.contextmanager
def _agent_signals() -> Iterator[None]:
    """The agent installs its own handlers for these signals: restore ours afterwards."""
    saved = {}
    for name in AGENT_SIGNALS:
        if hasattr(signal, name) and threading.current_thread() is threading.main_thread():
            saved[name] = signal.getsignal(getattr(signal, name))
    try:
        yield
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


@contextlib.contextmanager
def _quiet_agent(verbose: bool) -> Iterator[None]:
    """torchrun's agent logs its configuration and every failure at length (its loggers have
    levels and handlers of their own): keep that for -v; the launcher reports in one line."""
    if verbose:
        yield
        return
    names = [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]
    loggers = [logging.getLogger(n) for n in ("torch.distributed", *names)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def worker_failure(err: Exception, run_dir: Path) -> int:
    """In a worker started by `avis train`: hand the message to the launcher (printed once);
    an error the launcher cannot be told of is raised again."""
    if isinstance(err, AvisError):
        if report_worker_error(str(err)):
            return 1
        raise err
    if _is_peer_loss(err):
        from avis.engine.checkpoint import list_checkpoints

        found = list_checkpoints(run_dir)
        newest = f"the newest checkpoint is {found[-1][1]}; " if found else ""
        message = (
            "lost contact with another training process (it ended, or its machine or the "
            f"network went away: {_peer_error(err)}); {newest}continue with --resume once "
            "every node is up"
        )
        if report_worker_error(message, kind="peer"):
            return 1
    raise err


def _is_peer_loss(err: Exception) -> bool:
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        marker in text
        for marker in ("Connection closed by peer", "Connection reset", "gloo", "Timed out")
    )


def _peer_error(err: BaseException) -> str:
    """Gloo's message without its source location and advice: 'Connection reset by peer ...'."""
    import re

    from avis.engine.preflight import first_line

    text = first_line(err)
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text)
    return text.split(". This is typically")[0].strip()
