"""Leaving a torch.distributed process group so that every process exits.

Used by training (`avis.engine.distributed.cleanup_distributed`) and by sharded split
prediction (`avis.inference.split_predict`).

Why the order matters: destroying the group as soon as this process's last gloo barrier
returned raced with the other processes. Gloo's barrier returns on one rank once its own
message has been handed to the socket and the peer's has arrived, so the first rank out
closed its connections while another rank's last receive could still be in flight; that
rank then never completed the receive and waited on it (a futex) until gloo's timeout (30
minutes by default). That was the rare hang after `model_final.pth` (the same race as gloo's
issue #155, "barrier followed by context destruction causes some participants to fail").
Here every process first meets the others in the rendezvous store (TCP, not gloo) and only
destroys the group once all have returned from their last collective, so no gloo traffic is
in flight when any connection closes. The process that hosts the store (rank 0 when the group
was not started by torchrun) also waits until the others have read the final count. A
process whose peers are gone waits at most SHUTDOWN_WAIT_SECONDS.
"""

from __future__ import annotations

import logging
import time

SHUTDOWN_WAIT_SECONDS = 120.0
SHUTDOWN_KEY = "avis/shutdown"
LOG = logging.getLogger(__name__)


def leave_process_group(finished: bool = True) -> None:
    """Destroy the default process group, after the others when `finished` (a normal end:
    every process went through the same last collective); at once on an error path, where
    the others may never arrive."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished and dist.get_world_size() > 1:
        try:
            _store_barrier(dist.get_rank(), dist.get_world_size())
        except Exception as err:  # peers or store gone: leave anyway
            LOG.debug("shutdown barrier skipped: %s", err)
    dist.destroy_process_group()


def _store_barrier(rank: int, world_size: int) -> None:
    from torch.distributed.distributed_c10d import _get_default_store

    store = _get_default_store()
    arrived, left = f"{SHUTDOWN_KEY}/arrived", f"{SHUTDOWN_KEY}/left"
    store.add(arrived, 1)
    _wait_count(store, arrived, world_size)
    store.add(left, 1)
    if rank == 0:
        _wait_count(store, left, world_size)


def _wait_count(store, key: str, target: int) -> None:
    deadline = time.monotonic() + SHUTDOWN_WAIT_SECONDS
    pause = 0.001
    while int(store.add(key, 0)) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key}: not every process arrived in {SHUTDOWN_WAIT_SECONDS} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
