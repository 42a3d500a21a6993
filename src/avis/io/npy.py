"""Atomic `.npy` writes: a killed process leaves either the old file or the new one, never a
truncated file (see `avis.io.atomic`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avis.io.atomic import atomic_open


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return Path(path)
