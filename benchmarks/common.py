"""Shared helpers of the benchmarks: machine description, GEMM rate, timing, peak memory.

Timings on a shared machine are noisy; every benchmark reports the median (and min) of a few
repeats and measures the machine's fp32 GEMM rate in the same process, so that ratios (the
fraction of the floor) stay meaningful when absolute times are inflated by other load.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

GEMM_SIZE = 2048  # n for the n x n x n fp32 GEMM that defines the machine's rate
GEMM_REPEATS = 4
FLOPS_PER_MAC = 2
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # clear_refs code that resets VmHWM (Linux >= 4.0)
KIB = 1024


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the numbers were measured on (recorded next to every result)."""
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1_5_15": load_average(),
        # PyTorch's huge-page allocations (avis.runtime; the avis CLI turns them on)
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
    }


@dataclass
class Timing:
    """Seconds of each repeat of one measurement: wall and this process's CPU time."""

    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)  # user + system, all threads

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples)

    def as_dict(self) -> dict:
        return {"median_s": self.median, "min_s": self.best, "samples_s": self.samples}


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    for _ in range(warmup):
        fn()
    timing = Timing()
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        timing.samples.append(time.perf_counter() - start)
        timing.cpu_samples.append(time.process_time() - cpu)
    return timing


def gemm_rates(n: int = GEMM_SIZE, repeats: int = GEMM_REPEATS) -> tuple[float, float]:
    """Sustained fp32 GEMM rate: (FLOP per wall second, FLOP per CPU second), best of
    ``repeats`` n x n x n products each.

    The best repeat is the one least disturbed by other processes; the floor it gives is a
    lower bound of what any implementation can reach on this machine. The CPU-time rate
    (all threads' user + system time) is insensitive to time-sharing with other processes.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    timing = time_call(lambda: torch.mm(a, b, out=out), repeats=repeats, warmup=0)
    flops = FLOPS_PER_MAC * n**3
    return flops / timing.best, flops / min(timing.cpu_samples)


def gemm_rate(n: int = GEMM_SIZE, repeats: int = GEMM_REPEATS) -> float:
    """GEMM FLOP per wall second (see ``gemm_rates``)."""
    return gemm_rates(n, repeats)[0]


class GemmProbe:
    """GEMM rate sampled repeatedly during a run (between measurements); reports the median."""

    def __init__(self, n: int = GEMM_SIZE) -> None:
        self.n = n
        self.rates: list[float] = []
        self.cpu_rates: list[float] = []

    def sample(self) -> float:
        rate, cpu_rate = gemm_rates(self.n)
        self.rates.append(rate)
        self.cpu_rates.append(cpu_rate)
        return rate

    @property
    def cpu_rate(self) -> float:
        if not self.cpu_rates:
            self.sample()
        return statistics.median(self.cpu_rates)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else self.sample()

    def as_dict(self) -> dict:
        return {
            "gemm_size": self.n,
            "gflops_median": self.rate / 1e9,
            "gflops_samples": [r / 1e9 for r in self.rates],
            "gflops_per_cpu_second_median": self.cpu_rate / 1e9,
            "gflops_per_cpu_second_samples": [r / 1e9 for r in self.cpu_rates],
        }


def _vm_hwm_bytes() -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KIB
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory (bytes) of this process during a ``with`` block.

    Resets the kernel's high-water mark on entry (Linux ``clear_refs``); where that is not
    possible the value is the process-wide peak so far (``reset`` False).
    """

    def __enter__(self) -> PeakMemory:
        try:
            PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)
            self.reset = True
        except OSError:
            self.reset = False
        self.peak_bytes: int | None = None
        return self

    def __exit__(self, *exc) -> None:
        self.peak_bytes = _vm_hwm_bytes()


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
