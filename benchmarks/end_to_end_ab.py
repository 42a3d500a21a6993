"""End-to-end A/B of a setting that must not change results (docs/benchmarks.md).

    python benchmarks/end_to_end_ab.py --compare huge-pages [--frames 18] [--repeats 2]
    python benchmarks/end_to_end_ab.py --compare encoder-blocks [--frames 18] [--repeats 2]

R50 eager inference end to end (`benchmarks/inference_speed.py`, one fresh process per run)
with the setting off and on, interleaved; prints every run (wall, CPU and kernel seconds, peak
RSS, kept instances), the medians, and whether both variants kept the same instances.

- `huge-pages`: `THP_MEM_ALLOC_ENABLE=1` makes PyTorch's CPU allocator align allocations of
  2 MB and more to 2 MB and `madvise(MADV_HUGEPAGE)` them, so that on kernels whose THP mode
  is `madvise` a large fresh tensor is faulted in 2 MB pages instead of 4 KB ones (item 9).
- `encoder-blocks`: the pixel decoder's deformable encoder layers over one block of all
  queries (`--encoder-block-rows 0`, the code before item 10) or over blocks of one image's
  queries (the default); huge pages on in both.
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


def run(frames: int, compare: str, on: bool) -> dict:
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    cmd = [sys.executable, str(ROOT / "benchmarks/inference_speed.py"), "--frames", str(frames)]
    if compare == "huge-pages":  # inference_speed.py turns them on unless the variable is set
        env["THP_MEM_ALLOC_ENABLE"] = "1" if on else "0"
    else:
        cmd += [] if on else ["--encoder-block-rows", "0"]
    return run_child(cmd, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", required=True, choices=["huge-pages", "encoder-blocks"])
    parser.add_argument("--frames", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    mode = THP_MODE.read_text().strip() if THP_MODE.exists() else "unknown"
    print(f"kernel THP mode: {mode}")
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.repeats):
        for on in (False, True):
            r = run(args.frames, args.compare, on)
            rows[on].append(r)
            print(
                f"{args.compare} {'on ' if on else 'off'}: {r['seconds']:.1f} s wall, "
                f"{r['cpu_seconds']:.1f} CPU-s ({r['system_seconds']:.1f} kernel), "
                f"peak {r['peak_mb']:.0f} MB, kept {r['kept']}",
                flush=True,
            )
    for on in (False, True):
        med = statistics.median(r["seconds"] for r in rows[on])
        print(f"median, {args.compare} {'on' if on else 'off'}: {med:.1f} s")
    same = {r["kept"] for r in rows[False]} == {r["kept"] for r in rows[True]}
    print(f"same number of kept instances in every run: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
