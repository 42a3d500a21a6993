"""Process-wide settings the CLI applies before its first tensor is allocated.

PyTorch's CPU allocator reads ``THP_MEM_ALLOC_ENABLE`` once, at the first allocation of the
process: with ``1`` it aligns every allocation of 2 MB or more to 2 MB and marks it
``madvise(MADV_HUGEPAGE)``. On Linux kernels whose transparent-huge-page mode is
``madvise`` (the common default), the large fresh tensors of inference are then faulted in
2 MB pages instead of 4 KB ones. R50 inference on a 2-core VM spent a third of its CPU time
in the kernel faulting those pages; with huge pages the end-to-end time fell by about 23 %
(docs/benchmarks.md, "Performance", item 9). Results are
unchanged (the allocator does no arithmetic); peak memory is the same within 2 %.
"""

from __future__ import annotations

import os

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_page_allocations() -> bool:
    """Turn PyTorch's huge-page allocations on unless the user set ``THP_MEM_ALLOC_ENABLE``.

    Must run before the process allocates its first tensor (the CLI calls it before any
    handler runs); child processes (DDP workers) inherit it. Returns whether it is on.
    """
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return os.environ[HUGE_PAGES_ENV] not in ("", "0")
