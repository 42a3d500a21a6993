"""Training iterations/s of the tiny preset: 1 process (2 threads) vs 2 DDP processes (1 thread).

    python benchmarks/train_speed.py --iterations 12

Generates a small synthetic data set once (``avis synth``, cached under ``--workdir``), then
runs ``avis train --preset avism_tiny`` (the tiny CPU recipe: global batch 4 clips of 5
frames at 96 px) for a few iterations per configuration, with evaluation and checkpoints
off, and reads the per-iteration wall time the trainer logs (``metrics.jsonl``,
``seconds_per_iter``). The global batch is the same in both configurations, so
iterations/s compare directly. The first ``WARMUP_ITERS`` iterations are not counted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKDIR = Path("/tmp/avis_train_bench")
WARMUP_ITERS = 2
SYNTH_ARGS = ["--num-train", "12", "--num-val", "2", "--num-test", "2", "--size", "96",
              "--min-frames", "10", "--max-frames", "14", "--no-wav", "--workers", "1"]  # fmt: skip
CONFIGS = (  # (processes, threads per process)
    (1, 2),
    (2, 1),
)


def avis_command() -> list[str]:
    return [sys.executable, "-m", "avis.cli.main"]


def synthetic_data(workdir: Path) -> Path:
    root = workdir / "synth"
    if not (root / "train").is_dir():
        subprocess.run([*avis_command(), "synth", "--out", str(root), *SYNTH_ARGS], check=True,
                       capture_output=True)  # fmt: skip
    return root


def run_config(data: Path, out: Path, processes: int, threads: int, iterations: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        *avis_command(), "train", "--preset", "avism_tiny", "--data", str(data),
        "--output", str(out), "--no-eval", f"iterations={iterations}", "log_every=1",
        f"checkpoint_every={iterations * 10}", f"processes={processes}", f"threads={threads}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train" and "seconds_per_iter" in r]
    steady = [r["seconds_per_iter"] for r in train if r["iteration"] > WARMUP_ITERS]
    seconds = statistics.median(steady)
    clips = 4  # the tiny recipe's global batch
    return {
        "processes": processes,
        "threads_per_process": threads,
        "iterations": iterations,
        "seconds_per_iter_median": seconds,
        "iterations_per_s": 1.0 / seconds,
        "clips_per_s": clips / seconds,
        "seconds_per_iter_samples": [r["seconds_per_iter"] for r in train],
        "wall_s_including_startup": wall,
    }


def measure(iterations: int, workdir: Path = WORKDIR) -> dict:
    data = synthetic_data(workdir)
    runs = [run_config(data, workdir / f"run_p{p}_t{t}", p, t, iterations) for p, t in CONFIGS]
    return {
        "preset": "avism_tiny (tiny recipe: batch 4 clips x 5 frames, 96 px)",
        "data": f"avis synth {' '.join(SYNTH_ARGS)}",
        "runs": runs,
        "ddp_speedup": runs[1]["iterations_per_s"] / runs[0]["iterations_per_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args()
    print(json.dumps(measure(args.iterations, args.workdir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
