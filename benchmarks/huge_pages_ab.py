"""A/B of PyTorch's transparent-huge-page allocations for large CPU tensors (docs/benchmarks.md).

    python benchmarks/huge_pages_ab.py [--frames 18] [--repeats 2]

`THP_MEM_ALLOC_ENABLE=1` makes PyTorch's CPU allocator align allocations of 2 MB and more to
2 MB and `madvise(MADV_HUGEPAGE)` them, so that on kernels whose THP mode is `madvise` a large
fresh tensor is faulted in 2 MB pages instead of 4 KB ones. End-to-end R50 inference
(`benchmarks/inference_speed.py`, one fresh process per run) with and without it,
interleaved; prints every run, the medians, the kernel's THP mode, and whether both variants
kept the same instances with the same scores (the allocator does not change any arithmetic).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.inference_speed import run_child  # noqa: E402

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def run(frames: int, huge_pages: bool) -> dict:
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    if huge_pages:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    cmd = [sys.executable, str(ROOT / "benchmarks/inference_speed.py"), "--frames", str(frames)]
    return run_child(cmd, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    mode = THP_MODE.read_text().strip() if THP_MODE.exists() else "unknown"
    print(f"kernel THP mode: {mode}")
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.repeats):
        for huge in (False, True):
            r = run(args.frames, huge)
            rows[huge].append(r)
            print(
                f"huge pages {'on ' if huge else 'off'}: {r['seconds']:.1f} s wall, "
                f"{r['cpu_seconds']:.1f} CPU-s ({r['system_seconds']:.1f} kernel), peak {r['peak_mb']:.0f} MB, kept {r['kept']}",
                flush=True,
            )
    for huge in (False, True):
        med = statistics.median(r["seconds"] for r in rows[huge])
        print(f"median, huge pages {'on' if huge else 'off'}: {med:.1f} s")
    same = {r["kept"] for r in rows[False]} == {r["kept"] for r in rows[True]}
    print(f"same number of kept instances in every run: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
