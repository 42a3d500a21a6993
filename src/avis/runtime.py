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

import contextlib
import os
from collections.abc import Iterator

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_page_allocations() -> bool:
    """Turn PyTorch's huge-page allocations on unless the user set ``THP_MEM_ALLOC_ENABLE``.

    Must run before the process allocates its first tensor (the CLI calls it before any
    handler runs); child processes (DDP workers) inherit it. Returns whether it is on.
    """
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return os.environ[HUGE_PAGES_ENV] not in ("", "0")


def torch_device(spec: str | object):
    """`spec` (cpu, cuda, cuda:N, mps, or a torch.device) as a torch.device that exists here.

    Raises avis.errors.AvisError naming what is available instead of torch's AssertionError /
    RuntimeError deep inside the first `.to(device)`.
    """
    import torch

    from avis.errors import AvisError

    try:
        device = torch.device(spec)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as err:
        raise AvisError(f"device {spec!r}: not a torch device ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AvisError(f"device {spec!r}: CUDA is not available here (use --device cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise AvisError(f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise AvisError(f"device {spec!r}: Apple MPS is not available here (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise AvisError(f"device {spec!r}: avis runs on cpu, cuda or mps")
    return device


@contextlib.contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a `with` block (child processes started
    inside inherit them), then restore each one as it was (unset if it was unset)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
