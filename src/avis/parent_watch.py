"""A watchdog process that ends a training worker when its launcher is gone.

The portable fallback of `avis.engine.launch.die_with_parent` (where the kernel's parent-death
signal is not available, or with `AVIS_PARENT_WATCH=poll`). It runs as a separate process,
not as a thread of the worker: a thread needs the worker's GIL to run, and a worker blocked
in native code that holds it (a collective whose peer was just killed) would never let it
run. The watchdog polls, by pid, whether the launcher still exists, and whether the worker
(its parent) does; it ends the worker with SIGTERM (then SIGKILL) when the launcher is gone,
and ends itself when the worker is. Standard library only: it starts in tens of
milliseconds and does not import torch.

    python -m avis.parent_watch WORKER_PID LAUNCHER_PID [PERIOD_SECONDS]
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

GRACE_SECONDS = 5.0  # SIGTERM first; SIGKILL if the worker is still there after this
USAGE = "usage: python -m avis.parent_watch WORKER_PID LAUNCHER_PID [PERIOD_SECONDS]\n"


def pid_exists(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie does; also avis.engine.runlock's check)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def exists(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie counts as ended where /proc
    says so)."""
    if not pid_exists(pid):
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rfind(")") + 2] != "Z"
    return True


def watch(worker: int, launcher: int, period: float) -> int:
    """Poll every `period` seconds; returns 0 when the worker ended on its own, 1 when the
    watchdog ended it because the launcher was gone."""
    while True:
        if os.getppid() != worker:  # the worker ended (we were re-parented)
            return 0
        if not exists(launcher):
            break
        time.sleep(period)
    with contextlib.suppress(OSError):
        sys.stderr.write(f"avis: the launcher (pid {launcher}) is gone: ending process {worker}\n")
        sys.stderr.flush()
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while os.getppid() == worker and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.getppid() == worker:
            os.kill(worker, getattr(signal, "SIGKILL", signal.SIGTERM))
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        sys.stderr.write(USAGE)
        return 2
    return watch(int(args[0]), int(args[1]), float(args[2]) if len(args) == 3 else 0.5)


if __name__ == "__main__":
    sys.exit(main())
