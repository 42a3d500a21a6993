"""Deterministic, resumable, sharded order of training clips.

The training stream is a sequence of clips k = 0, 1, 2, ...: clip k belongs to pass
e = k // V over the V videos and shows video perm_e[k % V] (perm_e a permutation drawn from
(seed, e)). `ClipDataset.sample(index, epoch)` draws the clip's frames and augmentation from
(seed, epoch, index) only, so the dataset index e * V + perm_e[k % V] makes every clip a
pure function of k. Optimiser step i consumes clips [i*G, (i+1)*G) with G the global batch;
micro-batch a of process r takes its share in a fixed layout. Hence:
- resuming at step i reproduces exactly the clips an uninterrupted run would see;
- one process with batch G and W processes with G/W each see the same global batch.

Letters: V videos, G global batch, W processes, A accumulation steps, b = G / (W*A).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avis.engine.distributed import DistInfo

EPOCH_SEED_OFFSET = 7919  # separates the order stream from the dataset's own draws


class ClipOrder:
    """Maps a global clip number k to a dataset index (see the module docstring).

    With ``repeats`` (one integer >= 1 per video) a pass shows video v ``repeats[v]`` times
    (repeat-factor sampling): its P = sum(repeats) slots are permuted, and slot j of pass e
    gets the dataset index (e * P + j) * V + video, so each showing draws its own clip.
    """

    def __init__(self, num_videos: int, seed: int, repeats: Sequence[int] | None = None) -> None:
        self.num_videos, self.seed = num_videos, seed
        self.pool: np.ndarray | None = None  # (P,) video of each slot, None = one slot each
        if repeats is not None:
            counts = np.asarray(repeats, dtype=np.int64)
            if counts.shape != (num_videos,) or (counts < 1).any():
                raise ValueError(f"need one repeat factor >= 1 per video ({num_videos})")
            if (counts > 1).any():
                self.pool = np.repeat(np.arange(num_videos), counts)
        self.pass_length = num_videos if self.pool is None else len(self.pool)
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            rng = np.random.default_rng([self.seed, EPOCH_SEED_OFFSET, epoch])
            self._perms = {epoch: rng.permutation(self.pass_length)}  # keep one pass in memory
        return self._perms[epoch]

    def __call__(self, clip_number: int) -> int:
        epoch, position = divmod(clip_number, self.pass_length)
        slot = int(self.permutation(epoch)[position])
        if self.pool is None:
            return epoch * self.num_videos + slot
        return (epoch * self.pass_length + slot) * self.num_videos + int(self.pool[slot])


def micro_batch_clips(
    step: int, micro: int, global_batch: int, accumulation: int, info: DistInfo
) -> list[int]:
    """Global clip numbers of (optimiser step, micro-batch) for this process."""
    per_micro = global_batch // accumulation  # over all processes
    per_process = per_micro // info.world_size
    start = step * global_batch + micro * per_micro + info.rank * per_process
    return list(range(start, start + per_process))


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's dataset indices, one list per micro-batch, from `start_step` on."""

    def __init__(
        self,
        order: ClipOrder,
        start_step: int,
        num_steps: int,
        global_batch: int,
        accumulation: int,
        info: DistInfo,
    ) -> None:
        if global_batch % (accumulation * info.world_size):
            raise ValueError(
                f"batch_size {global_batch} must be a multiple of accumulation ({accumulation}) "
                f"x processes ({info.world_size})"
            )
        self.order, self.start_step, self.num_steps = order, start_step, num_steps
        self.global_batch, self.accumulation, self.info = global_batch, accumulation, info

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            for micro in range(self.accumulation):
                clips = micro_batch_clips(
                    step, micro, self.global_batch, self.accumulation, self.info
                )
                yield [self.order(k) for k in clips]


class _ByIndex(Dataset):
    """Calls `dataset.sample(index, epoch=0)`: the index alone fixes the clip."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset.sample(index, 0)


def make_train_loader(
    dataset: Any,
    collate: Callable[[list[Any]], Any],
    *,
    seed: int,
    start_step: int,
    num_steps: int,
    global_batch: int,
    accumulation: int,
    info: DistInfo,
    num_workers: int = 0,
    repeats: Sequence[int] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over micro-batches of this process, starting at optimiser step `start_step`.

    `dataset` needs `__len__` (number of videos) and `sample(index, epoch)` (video = index % V);
    `repeats`: optional per-video repeat factors (see `ClipOrder`); `pin_memory`: batches
    in pinned host memory (CUDA: non-blocking copies to the GPU).
    """
    order = ClipOrder(len(dataset), seed, repeats)
    sampler = StepBatchSampler(order, start_step, num_steps, global_batch, accumulation, info)
    return DataLoader(
        _ByIndex(dataset),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
