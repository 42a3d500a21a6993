"""Checks of a training run made before any process trains (and, across nodes, before the
first step): the batch layout, the output folder, its lock, the checkpoint to resume from and
whether it fits the model, the data. Each raises an AvisError: one line, nothing started,
nothing written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from avis.errors import CheckpointError, DataError


def check_batch(cfg, world_size: int) -> None:
    if cfg.batch_size % (cfg.accumulation * world_size):
        raise DataError(
            f"config: batch_size {cfg.batch_size} must be a multiple of accumulation "
            f"({cfg.accumulation}) x processes over all nodes ({world_size})"
        )


def check_run(
    cfg,
    run_dir: Path,
    *,
    resume: bool,
    evaluate: bool,
    data: bool,
    lock: bool,
    run_folder: bool = True,
) -> Path | None:
    """What can be checked before any process trains; returns the checkpoint to resume from.

    run_folder: the output folder, its lock and the checkpoint (the node that writes them);
    data: also the data, the evaluation split (when `evaluate`) and whether the checkpoint fits
    the model (a launcher, before its workers start; one process finds those while it builds
    them, before it writes anything)."""
    import torch

    from avis.engine.build import build_model, build_train_dataset, model_config
    from avis.engine.checkpoint import list_checkpoints, newest_intact_checkpoint
    from avis.engine.evaluation import SplitEvaluator
    from avis.engine.runlock import RunLock

    found_resume: Path | None = None
    content: dict[str, Any] | None = None
    if run_folder:
        check_output(run_dir)
        if list_checkpoints(run_dir) and not resume:
            raise DataError(
                f"{run_dir} already holds checkpoints: add --resume, or give another --output"
            )
        if lock and run_dir.is_dir():
            RunLock(run_dir).check()
        if resume:
            found = newest_intact_checkpoint(run_dir)  # warns about a damaged newer one
            if found is not None:
                found_resume, content = found
    if not data:
        return found_resume
    dataset, split = build_train_dataset(cfg)  # the data: annotations, frames, features
    model_cfg = model_config(cfg, split.num_classes, split.audio_dim)
    if evaluate:
        SplitEvaluator(
            cfg.data.root, cfg.data.eval_split, model_cfg, split.class_names,
            max_videos=cfg.data.eval_max_videos,
        )  # fmt: skip
    if content is not None and found_resume is not None:
        with torch.device("meta"):  # shapes only: no memory, no time
            model = build_model(model_cfg)
        try:
            model.load_state_dict(content["model"], strict=True, assign=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"{found_resume}: weights do not fit the model of this config: {first_line(err)}"
            ) from None
    return found_resume


def check_output(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(f"--output {run_dir} is a file, not a folder")
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"--output {run_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"--output {run_dir}: {existing} is not writable")


def check_same_start(iteration: int, info, run_dir: Path) -> None:
    """Every process must start from the same checkpoint (other nodes read the run folder
    through their own view of it)."""
    from avis.engine.distributed import all_gather_objects

    starts = all_gather_objects(iteration, info)
    if len(set(starts)) > 1:
        raise CheckpointError(
            f"the training processes would start at different iterations {starts}: every node "
            f"must see the same checkpoints of {run_dir} (a shared file system) to resume"
        )


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (at most `limit` characters)."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__
