"""`FeatureSpill`: a video's per-chunk mask features in a temporary file.

The memory-bounded inference path needs every frame's mask features twice: for the video
module's queries (first pass) and for the mask scores and masks (second pass). Without a
spill it recomputes them (a second backbone + pixel decoder pass, about half the model's
time); with one it writes each chunk's features once (their own bytes, float32 or the
bfloat16 / float16 of a reduced `--precision`: an exact round trip)
and reads them back a chunk at a time, so RAM holds one chunk whatever the video's length.
The file lives in `directory` (default: the system temporary folder) and is deleted on
`close()` / leaving the `with` block, also after an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SAFETY_FACTOR = 1.1  # free space wanted: this x the bytes to write, plus MARGIN_BYTES
MARGIN_BYTES = 1 << 30
# the bit-identical numpy-compatible dtype each stored dtype is written as
STORED_AS = {torch.float32: torch.float32, torch.bfloat16: torch.int16, torch.float16: torch.float16}
NUMPY_OF = {torch.float32: np.float32, torch.int16: np.int16, torch.float16: np.float16}


def spill_fits(nbytes: int, directory: str | Path | None = None) -> bool:
    """Whether `directory` (default: the temporary folder) has room for `nbytes` of spill."""
    free = shutil.disk_usage(directory or tempfile.gettempdir()).free
    return free >= nbytes * SAFETY_FACTOR + MARGIN_BYTES


class FeatureSpill:
    """Append float32 (or bfloat16 / float16) tensors, then iterate over them in the same order (any number of times)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="avis-features-", suffix=".f32", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "w+b")
        self._entries: list[tuple[int, tuple[int, ...], torch.dtype]] = []  # (byte offset, shape, dtype)
        self.nbytes = 0

    def append(self, x: Tensor) -> None:
        """Store a float32 / bfloat16 / float16 tensor of any shape (copied to CPU first if needed)."""
        if x.dtype not in STORED_AS:
            raise TypeError(f"FeatureSpill stores {sorted(map(str, STORED_AS))} tensors, got {x.dtype}")
        array = x.detach().cpu().contiguous().view(STORED_AS[x.dtype]).numpy()
        self._entries.append((self.nbytes, tuple(array.shape), x.dtype))
        self._file.seek(self.nbytes)
        self._file.write(array.data.cast("B"))  # the array's own bytes, no copy
        self.nbytes += array.nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Tensor]:
        self._file.flush()
        for offset, shape, dtype in self._entries:
            self._file.seek(offset)
            count = int(np.prod(shape))
            stored = STORED_AS[dtype]
            array = np.fromfile(self._file, dtype=NUMPY_OF[stored], count=count)
            if array.size != count:
                raise OSError(f"{self.path}: spilled features truncated ({array.size} of {count} values)")
            yield torch.from_numpy(array).view(dtype).view(shape)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
