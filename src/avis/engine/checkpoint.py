"""Training checkpoints: atomic writes, keep-last-k, exact resume.

A training checkpoint is an avis model checkpoint (`{"format": "avis", "config": model config,
"model": state_dict}`, loadable by the model's own loader) plus what an exact resume needs:
`train_config`, `iteration` (optimiser steps done), `optimizer`, `scheduler`, `scaler`,
`rng` (one entry per process, in rank order) and `world_size`. Every value is a tensor or a
plain container, so `torch.load(..., weights_only=True)` reads it.

Files: `<run>/checkpoints/checkpoint_<iteration:07d>.pth`, the newest k kept.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from avis.errors import CheckpointError
from avis.io.atomic import is_temp_of

CHECKPOINT_FORMAT = "avis"  # = avis.models.checkpoint.AVIS_FORMAT
CHECKPOINT_VERSION = 1  # = avis.models.checkpoint.AVIS_FORMAT_VERSION
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d{7})\.pth$")
LOG = logging.getLogger("avis.train")


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file that cannot be read (cut short by a crash or a full disk, garbled)."""


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"checkpoint_{iteration:07d}.pth"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the run's training checkpoints, oldest first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete temporary files left by a run killed while writing a checkpoint (call it while
    holding the run folder's lock)."""
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINT_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if is_temp_of(path.name, ".pth") and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` training checkpoints."""
    found = list_checkpoints(run_dir)
    for _, path in found[: max(0, len(found) - max(keep_last, 1))]:
        path.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU/CUDA, numpy, python) as tensors and lists."""
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _python_state_to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_lists(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint safely (`weights_only`): DamagedCheckpointError when the file
    cannot be read, CheckpointError when it is refused (objects other than weights and plain
    data, which could run code) or is no training checkpoint."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refusal(err)
        if refused is None:  # a garbled pickle stream, not a forbidden object
            raise DamagedCheckpointError(
                f"{path}: cannot read the checkpoint, it is damaged or cut short "
                f"(the pickle stream is invalid)"
            ) from None
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors and plain data, which "
            f"could run code when loaded; avis checkpoints never do ({refused})"
        ) from None
    except MemoryError:
        raise
    except Exception as err:  # cut short: RuntimeError / OSError / EOFError; garbled: KeyError...
        raise DamagedCheckpointError(
            f"{path}: cannot read the checkpoint, it is damaged or cut short "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an avis checkpoint (expected format 'avis')")
    missing = [k for k in ("model", "iteration", "optimizer", "scheduler") if k not in data]
    if missing:
        raise CheckpointError(
            f"{path}: a model-only checkpoint cannot resume training (no {missing})"
        )
    return data


def newest_intact_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """(path, content) of the newest readable training checkpoint of `run_dir`; None if there
    is none. A damaged newer one is skipped with a warning naming both files; a refused one
    (not weights-only) stops everything."""
    found = list_checkpoints(run_dir)
    damaged: list[tuple[Path, DamagedCheckpointError]] = []
    for _, path in reversed(found):
        try:
            data = load_training_checkpoint(path)
        except DamagedCheckpointError as err:
            damaged.append((path, err))
            continue
        for _, problem in damaged:
            LOG.warning("%s; resuming from the newest intact checkpoint, %s", problem, path.name)
        return path, data
    if damaged:
        names = ", ".join(p.name for p, _ in damaged)
        raise CheckpointError(
            f"{run_dir / CHECKPOINT_DIR}: no intact checkpoint to resume from ({names} cannot "
            f"be read: {damaged[0][1]})"
        )
    return None


def _refusal(err: BaseException) -> str | None:
    """The line of a weights-only error that names a forbidden object, None if there is none."""
    for line in str(err).splitlines():
        if "GLOBAL" in line or "allowed global" in line:
            return line.strip()[:200]
    return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else "no details"
