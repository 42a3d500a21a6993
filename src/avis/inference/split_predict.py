"""Whole-split inference: every video of an AVISeg split -> one results JSON.

The split's precomputed audio features (`FEATAudios/<video>.npy`) are used, so the numbers are
the ones the model was meant to see. Under `torchrun` (WORLD_SIZE > 1 in the environment) the
videos, sorted by id, are dealt round-robin to the ranks (rank r takes videos r, r+W, ...);
rank 0 gathers every record over gloo and writes one file sorted by video id, with each
video's records in the model's order, so the file is identical to a single-process run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from avis.errors import DataError
from avis.inference.results import sort_records, write_results

if TYPE_CHECKING:
    from avis.inference.prediction import Prediction

log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
EXTRACTOR_MARKER = "extractor.json"  # FEATAudios/extractor.json, written by `avis extract-audio`
ItemT = TypeVar("ItemT")

# (frames (T, H, W, 3) uint8, audio (T, D) float32) -> Prediction (avis.inference.prediction)
ArrayPredictFn = Callable[[np.ndarray, np.ndarray], "Prediction"]


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    owns_group: bool  # True when this module created the process group (and must destroy it)


def init_distributed() -> DistContext:
    """Join the torchrun process group (gloo) if WORLD_SIZE > 1, else a 1-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, False)
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), owns)


def shard(items: Sequence[ItemT], rank: int, world_size: int) -> list[ItemT]:
    """Round-robin share of `rank`: items rank, rank + W, rank + 2W, ..."""
    return list(items[rank::world_size])


def gather_records(records: list[dict], ctx: DistContext) -> list[dict] | None:
    """Every rank's records on rank 0 (sorted by video id); None on the other ranks."""
    if ctx.world_size == 1:
        return sort_records(records)
    import torch.distributed as dist

    gathered: list[list[dict]] | None = [[] for _ in range(ctx.world_size)] if ctx.rank == 0 else None
    dist.gather_object(records, gathered, dst=0)
    if gathered is None:  # not rank 0
        return None
    return sort_records(r for part in gathered for r in part)


def predict_split(
    predict_fn: ArrayPredictFn,
    root: Path | str,
    split: str,
    out_dir: Path | str,
    *,
    num_classes: int | None = None,
    audio_dim: int | None = None,
    audio_features: str | None = None,
    progress: bool = True,
    spatial_audio: bool = False,
) -> Path | None:
    """Predict every video of `<root>/<split>` and write `<out_dir>/results.json`.

    num_classes / audio_dim: what the model expects, checked against the split before any
    video runs; audio_features: the extractor the model was trained with, compared (warning)
    with the split's `FEATAudios/extractor.json` when there is one; spatial_audio: the model
    reads where the sound is (the split's FEATSpatial maps follow each frame's features). Returns the results path on rank 0, None on other ranks.
    """
    from avis.data.split import load_split

    data = load_split(root, split, spatial_audio=spatial_audio)
    where = f"{Path(root) / split}.json"
    if num_classes is not None and data.num_classes != num_classes:
        raise DataError(
            f"{where}: the split has {data.num_classes} categories but the model predicts "
            f"{num_classes} classes"
        )
    if audio_dim is not None and data.videos and data.audio_dim != audio_dim:
        raise DataError(
            f"{Path(root) / split / 'FEATAudios'}: audio features have {data.audio_dim} values "
            f"per second, the model expects {audio_dim}"
        )
    _check_extractor(Path(root) / split / "FEATAudios" / EXTRACTOR_MARKER, audio_features)
    category_ids = [c.id for c in data.categories]
    ctx = init_distributed()
    try:
        videos = shard(sorted(data.videos, key=lambda v: v.id), ctx.rank, ctx.world_size)
        records: list[dict] = []
        for video in _progress(videos, f"predict {split} (rank {ctx.rank})", progress and ctx.rank == 0):
            frames = data.load_frames(video)  # (T, H, W, 3)
            audio = data.load_audio_input(video)  # (T, D [+ B*P])
            records += predict_fn(frames, audio).records(video.id, category_ids)
        log.info("rank %d: %d videos, %d records", ctx.rank, len(videos), len(records))
        merged = gather_records(records, ctx)
        if merged is None:
            return None
        return write_results(merged, Path(out_dir) / RESULTS_NAME)
    finally:
        if ctx.owns_group:
            import torch.distributed as dist

            from avis.inference.process_group import leave_process_group

            dist.barrier()
            leave_process_group()  # after every rank left the barrier (no hang at exit)


def _check_extractor(marker: Path, expected: str | None) -> None:
    if expected is None or not marker.is_file():
        return
    try:
        found = json.loads(marker.read_text()).get("extractor")
    except (OSError, ValueError, AttributeError):
        log.warning("%s: unreadable extractor marker", marker)
        return
    if found != expected:
        log.warning(
            "AUDIO FEATURE MISMATCH: %s says the features are '%s', the model was trained with "
            "'%s'; predictions will be unreliable", marker, found, expected,
        )  # fmt: skip


def _progress(items: list, description: str, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=False) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
