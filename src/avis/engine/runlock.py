"""One training per run folder: `<run>/.avis-train.lock`.

The lock is an exclusive `flock` on the file, held by the process that writes the run folder
(the only process of a single-process run, rank 0 under torchrun). The kernel drops it when
that process ends, however it ends (kill -9 included), so a lock left by a dead run can never
block a new one. The file also records who holds it (host, boot id, pid, start time,
command) for the messages: "in use by pid N on host H since T" when it is held, "taking over
the lock of a training that is gone" when a new run finds the record of one that died without
releasing it.

Where the file system has no `flock` (some network or FUSE file systems, or no `fcntl` at
all), the record alone decides: the lock is stale when its process no longer runs on this
host (pid gone, or the pid now belongs to another process: other start time), or when the
host has rebooted since (other boot id); a lock taken on another host is obeyed (it cannot be
checked from here) and the message says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from avis.errors import AvisError
from avis.parent_watch import pid_exists

LOCK_NAME = ".avis-train.lock"
LOG = logging.getLogger("avis.train")


class RunLockedError(AvisError):
    """The run folder is in use by another training."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot; Linux), '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :].split()[19]  # field 22 of stat, after "pid (comm) "


def _describe(record: dict[str, Any]) -> str:
    since = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, since {when}"


class RunLock:
    """`with RunLock(run_dir):` holds the run folder's lock; `acquire()` / `release()` too."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    # ------------------------------------------------------------------ public
    def check(self) -> None:
        """Raise RunLockedError if a live training holds the lock (takes nothing)."""
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDWR)
        try:
            got = self._try_flock(fd)
            if got is False or (got is None and self._record_alive(self._read(fd))):
                raise self._locked_error(self._read(fd))
        finally:
            os.close(fd)  # closing drops the probe's flock

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            got = self._try_flock(fd)
            if got is False:
                raise self._locked_error(self._read(fd))
            record = self._read(fd)
            if got is None and record and self._record_alive(record):  # no flock here
                raise self._locked_error(record)
            if record:
                LOG.warning(
                    "%s: taking over the lock of a training that is no longer running (%s)",
                    self.path.parent, _describe(record),
                )  # fmt: skip
            self._write(fd, self._own_record())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the record (a clean end) and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _try_flock(fd: int) -> bool | None:
        """True: locked now; False: held by another process; None: no flock here."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # ENOLCK, EOPNOTSUPP, ...: the file system has no flock
            return None
        return True

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            record = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            return {"pid": "?", "host": "?", "unreadable": True}
        return record if isinstance(record, dict) else {}

    @staticmethod
    def _write(fd: int, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)

    @staticmethod
    def _own_record() -> dict[str, Any]:
        pid = os.getpid()
        return {
            "pid": pid,
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "pid_start": _start_time(pid),
            "started": time.time(),
            "command": " ".join(sys.argv)[:500],
        }

    @staticmethod
    def _record_alive(record: dict[str, Any]) -> bool:
        """Fallback mode: does the recorded process still run? (Other hosts: assume yes.)"""
        if not record:
            return False
        if record.get("host") != socket.gethostname():
            return True
        boot = _boot_id()
        if boot and record.get("boot_id") and record["boot_id"] != boot:
            return False  # the machine rebooted since
        pid = record.get("pid")
        if not isinstance(pid, int) or not pid_exists(pid):
            return False
        start = record.get("pid_start")
        return not (start and _start_time(pid) and _start_time(pid) != start)  # pid reused

    def _locked_error(self, record: dict[str, Any]) -> RunLockedError:
        run = self.path.parent
        other_host = record.get("host") not in (None, "?", socket.gethostname())
        hint = (
            f"; it was locked on another host: if no training runs there, delete {self.path}"
            if other_host
            else ""
        )
        return RunLockedError(
            f"{run} is in use by another training ({_describe(record)}): one training per run "
            f"folder; wait for it to end, stop it, or choose another --output{hint}"
        )
