"""`ChunkPrefetcher`: a video's frame chunks read ahead in a background thread.

Decoding (PyAV, JPEG, a memmap) then overlaps with the model's work on the previous chunk;
the queue is bounded (`depth` chunks), so memory holds at most `depth` chunks ahead. With
`pin=True` (CUDA) each chunk is placed in pinned host memory by the thread, ready for a
non-blocking host-to-device copy. Chunks are asked for in the order of `spans`; asking for
another span (the second pass of the memory-bounded path) restarts the reader there.

Letters: t frames of a chunk, H x W frame size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

_DONE = object()


class ChunkPrefetcher:
    """`get(start, stop)` -> frames[start:stop] as a uint8 tensor (t, H, W, 3), read ahead."""

    def __init__(self, frames: Any, spans: Sequence[tuple[int, int]], depth: int = 2, pin: bool = False) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.frames, self.spans, self.depth, self.pin = frames, list(spans), depth, pin
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._next = 0  # index in spans of the next chunk the queue will give

    def read(self, start: int, stop: int) -> Tensor:
        """frames[start:stop] read now (the reader thread's work)."""
        chunk = torch.from_numpy(np.ascontiguousarray(self.frames[start:stop]))
        return chunk.pin_memory() if self.pin else chunk

    def _run(self, first: int, out: queue.Queue, stop: threading.Event) -> None:
        def put(item: object) -> bool:  # False once the consumer has stopped the reader
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for start, end in self.spans[first:]:
                if not put(self.read(start, end)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put(err)
            return
        put(_DONE)

    def _start(self, first: int) -> None:
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.depth)
        self._next = first
        self._thread = threading.Thread(
            target=self._run, args=(first, self._queue, self._stop), name="avis-prefetch", daemon=True
        )
        self._thread.start()

    def get(self, start: int, stop: int) -> Tensor:
        try:
            index = self.spans.index((start, stop))
        except ValueError:
            return self.read(start, stop)  # not a planned chunk: read it directly
        if self._thread is None or index != self._next:
            self._start(index)
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        if item is _DONE:  # cannot happen for a planned span; read it directly
            return self.read(start, stop)
        self._next = index + 1
        return item

    def close(self) -> None:
        """Stop the reader thread (it finishes the chunk it is reading)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ChunkPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
