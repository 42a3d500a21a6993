"""Process-wide allocator settings the CLI applies before its first tensor is allocated.

PyTorch's CPU allocator reads ``THP_MEM_ALLOC_ENABLE`` once, at the first allocation of the
process: with ``1`` it aligns every allocation of 2 MB or more to 2 MB and marks it
``madvise(MADV_HUGEPAGE)``. On Linux kernels whose transparent-huge-page mode is
``madvise`` (the common default), the large fresh tensors of inference are then faulted in
2 MB pages instead of 4 KB ones. R50 inference on a 2-core VM spent a third of its CPU time
in the kernel faulting those pages; with huge pages the end-to-end time fell by about 23 %
(docs/benchmarks.md, `benchmarks/end_to_end_ab.py --compare huge-pages`). Results are
unchanged (the allocator does no arithmetic); peak memory is the same within 2 %.
"""

from __future__ import annotations

import ctypes
import os
import sys

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_page_allocations() -> bool:
    """Turn PyTorch's huge-page allocations on unless the user set ``THP_MEM_ALLOC_ENABLE``.

    Must run before the process allocates its first tensor (the CLI calls it before any
    handler runs); child processes (DDP workers) inherit it. Returns whether it is on.
    """
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return os.environ[HUGE_PAGES_ENV] not in ("", "0")


# glibc's malloc: tensors up to this size come from the heap (glibc's largest allowed value;
# its default starts at 128 KB and adapts up to it), and freed heap memory is kept until this
# much lies free at the top of the heap (default: twice the adaptive threshold, <= 64 MB)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)
# set by the user: their choice wins (GLIBC_TUNABLES may carry glibc.malloc.* settings)
MALLOC_ENV = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
)


def keep_freed_heap_memory() -> bool:
    """Make glibc recycle the memory of freed tensors instead of handing it back to the OS.

    Inference allocates and frees the same mid-sized tensors (a few to 30 MB: the pixel
    decoder's query blocks, the mask pieces) thousands of times. With glibc's defaults many
    of them are returned to the kernel when freed and page-faulted (zeroed) afresh when
    allocated again. ``mallopt`` fixes the mmap threshold at 32 MB and the trim threshold at
    1 GB: up to 1 GB of freed heap memory is kept for reuse (peak RSS rose by 2-3 % in the
    R50 benchmark; docs/benchmarks.md, item 15). Results are unchanged.

    Linux with glibc only, and only where the user set none of ``MALLOC_ENV`` (setting, e.g.,
    ``MALLOC_TRIM_THRESHOLD_=131072`` restores glibc's own behaviour). Returns whether the
    settings were applied. Can run at any time; the CLI calls it before a handler runs.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has a different malloc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def configure_memory() -> dict[str, bool]:
    """Both allocator settings of this module (what the CLI and the benchmarks apply before
    their first tensor); returns which are on."""
    return {
        "huge_pages": enable_huge_page_allocations(),
        "keep_freed_heap_memory": keep_freed_heap_memory(),
    }
