"""Process-group helpers for `torchrun` + DistributedDataParallel.

`torchrun --nproc_per_node N` (and multi-node `--nnodes`) sets RANK, WORLD_SIZE, LOCAL_RANK
and the rendezvous variables; `init_distributed` joins the group with gloo on CPU and nccl
on GPU. Without those variables everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

LOG = logging.getLogger("avis.train")
DEFAULT_TIMEOUT_MINUTES = 30.0  # torch's own default for gloo


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(
    device: str = "auto", timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
) -> DistInfo:
    """Join the torchrun process group if there is one; pick the device of this process.

    timeout_minutes: how long a collective waits for the other processes before it fails
    (a process that vanished without closing its connections, a hung node)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_minutes)
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def cleanup_distributed(finished: bool = True) -> None:
    """Leave the process group so that every process exits, whatever order they finish in.

    finished: every process got through the same last collective (a normal end); False on an
    error path, where the others may never arrive: the group is destroyed at once. See
    `avis.inference.process_group.leave_process_group` for why the order matters (the rare
    hang after model_final.pth).
    """
    from avis.inference.process_group import leave_process_group

    leave_process_group(finished)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's `obj`, in rank order (just [obj] without a process group)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """The mean of each value over processes (for logging)."""
    if not info.enabled or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    tensor /= info.world_size
    return dict(zip(names, tensor.tolist()))


def max_over_processes(value: float, info: DistInfo) -> float:
    """The largest `value` over processes (the same number on every process)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())
