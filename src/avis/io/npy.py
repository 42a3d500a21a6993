"""Atomic `.npy` writes: a killed process leaves either the old file or the new one, never a
truncated file (see `avis.io.atomic`); `load_npy` reads one array and turns every way a file
can be broken into a `DataError`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from avis.errors import DataError
from avis.io.atomic import atomic_open


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return Path(path)


def load_npy(
    path: str | Path, what: str, mmap_mode: Literal["r", "r+", "c"] | None = None
) -> np.ndarray:
    """One array from a `.npy` file (never pickled objects), or a DataError naming `path` and
    `what`: numpy raises OSError, ValueError, EOFError (an empty file), OverflowError (a header
    with a negative size, memory-mapped) and returns an archive object for a `.npz` file."""
    try:
        loaded = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError, OverflowError) as err:
        raise DataError(f"{path}: cannot read {what} ({err or type(err).__name__})") from None
    if not isinstance(loaded, np.ndarray):  # np.lib.npyio.NpzFile: a zip of arrays
        close = getattr(loaded, "close", None)
        if close is not None:
            close()
        raise DataError(f"{path}: cannot read {what} (a .npz archive, not one .npy array)")
    return loaded
