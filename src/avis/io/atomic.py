"""Atomic file writes: a crash, a full disk or Ctrl-C leaves either the old file or the new
one at the destination, never a half-written file.

Every writer goes through `atomic_path`: the data are written to a temporary file in the
destination's folder (same file system, so the rename is atomic), flushed to disk (fsync),
then renamed over the destination with `os.replace`, and the folder entry is synced. On an
exception the temporary file is removed and the destination is untouched.

    write_text_atomic(path, text)                 # str
    write_json_atomic(path, obj, indent=1)        # json.dumps(obj, **kwargs)
    with atomic_open(path) as handle: ...         # any writer taking a binary file object
    with atomic_path(path) as tmp: ...            # any writer taking a file name (PyAV, ...)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = "."
TEMP_MARK = ".tmp"


def temp_name(path: Path) -> Path:
    """`<folder>/.<name>.<pid>.tmp`: hidden, unique per process, and without the destination's
    suffix, so a leftover of a killed process never matches `*.pth` / `*.npy` (writers are
    given their format explicitly)."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}{TEMP_MARK}")


def is_temp_of(name: str, suffix: str) -> bool:
    """Whether `name` is a temporary file `temp_name` made for a file ending in `suffix`."""
    pattern = rf"{re.escape(TEMP_PREFIX)}.+{re.escape(suffix)}\.\d+{re.escape(TEMP_MARK)}"
    return re.fullmatch(pattern, name) is not None


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable where the platform allows opening a directory."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Yield an open temporary file (`mode` "wb" or "w"); on success it replaces `path`."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes a new file: mode 'wb' or 'w', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """json.dumps(obj, **dumps_kwargs) written atomically. NaN / Infinity are refused
    (`allow_nan=False`): they are not JSON and other readers reject them."""
    dumps_kwargs.setdefault("allow_nan", False)
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs))


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save written atomically (torch is imported by the caller already)."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)
