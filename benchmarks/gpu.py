"""The GPU benchmark: inference throughput per precision, training speed, the tiny GPU recipe.

    python benchmarks/gpu.py throughput --out gpu.json          # the table of issue 17
    python benchmarks/gpu.py train-speed --data SYNTH --out gpu.json
    python benchmarks/gpu.py recipe-eval --run RUN --data SYNTH --out gpu.json
    python benchmarks/gpu.py throughput --cpu-smoke --out /tmp/smoke.json   # tiny, on the CPU

`benchmarks/gpu_check.sh` runs them all (plus the golden parity tests on CUDA) in one go on a
bare GPU machine. Every section merges its results into the `--out` JSON file as soon as a
row is measured, so a run cut short keeps what it measured.

throughput: whole-video inference as `avis predict` runs it (`VideoPredictor.predict` on
uint8 frames in memory at the network size, random weights, the preset's default threshold,
so as in issue 17 no instance is kept and no output mask is made). Rows: R50 360x640 T = 60,
Swin-L 360x640 T = 60, R50 720x1280 T = 60 (`--precisions` for the first,
`--big-precisions` for the others); R50 360x640 T = 600 on the
standard path (mask features offloaded to pinned host memory) and the streaming path; an
optional compiled row (`--compile-modes`). Per row: a warm-up run on one chunk, then
`--repeats` timed runs (median); frames/s, peak GPU memory (`max_memory_allocated`), peak
host RSS. Compile rows also give the first call's seconds (the compile cost).

train-speed: `avis train --preset avism_r50` for `--iterations` on the synthetic set, per
precision, median seconds per iteration after the first 10 (clips of 5 frames, 2 per step).

recipe-eval: scores a finished run (`model_final.pth`) on the test split with both
protocols (FSLA, HOTA, mAP), as docs/training.md does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

KIB, MIB = 1024, 2**20
WARMUP_ITERS = 10


def merge_out(path: Path | None, section: str, value: object) -> None:
    """Write `value` under `section` of the JSON file at `path` (kept across sections)."""
    if path is None:
        return
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[section] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def machine() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * KIB / MIB, 1)
    except OSError:
        pass
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- throughput
def throughput_rows(args) -> list[dict]:
    """(preset, height, width, frames, streaming, precision, compile mode) of each row."""
    if args.cpu_smoke:
        sizes = [("avism_tiny", 64, 96, 6)]
        long = [("avism_tiny", 64, 96, 12)]
    else:
        sizes = [("avism_r50", 360, 640, 60), ("avism_swinl", 360, 640, 60), ("avism_r50", 720, 1280, 60)]
        long = [("avism_r50", 360, 640, 600)]
    rows = []
    for index, (preset, h, w, t) in enumerate(sizes):
        for precision in args.precisions if index == 0 else args.big_precisions:
            rows.append(dict(preset=preset, height=h, width=w, frames=t, streaming=False, precision=precision, compile=None))
    for preset, h, w, t in long:
        for streaming in (False, True):
            rows.append(dict(preset=preset, height=h, width=w, frames=t, streaming=streaming, precision=args.long_precision, compile=None))
    preset, h, w, t = sizes[0]
    for mode in args.compile_modes:
        rows.append(dict(preset=preset, height=h, width=w, frames=t, streaming=False, precision=args.long_precision, compile=mode))
    return rows


def measure_row(row: dict, device: torch.device, repeats: int) -> dict:
    from avis.inference.accelerate import compile_for_inference
    from avis.inference.predictor import VideoPredictor
    from avis.inference.shipped import ModelInfo
    from avis.models.avism import build_avism
    from avis.models.config import get_preset

    torch.manual_seed(0)
    cfg = get_preset(row["preset"])
    short, long_side = min(row["height"], row["width"]), max(row["height"], row["width"])
    cfg = replace(cfg, test_short_side=short, test_max_size=max(cfg.test_max_size, long_side))
    model = build_avism(cfg).eval()
    if row["compile"]:
        mode = None if row["compile"] == "default" else row["compile"]
        compile_for_inference(model, ("backbone", "pixel_decoder"), mode=mode)
    info = ModelInfo("random weights", "avis", [f"c{i}" for i in range(cfg.num_classes)], "weight_free")
    predictor = VideoPredictor(model, cfg, info, device=device, precision=row["precision"],
                               streaming=row["streaming"], spill=True)  # fmt: skip
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (row["frames"], row["height"], row["width"], 3), dtype=np.uint8)
    audio = rng.standard_normal((row["frames"], cfg.audio_dim)).astype(np.float32)
    chunk = cfg.test_run_chunk_size
    start = time.perf_counter()
    predictor.predict((frames[:chunk], audio[:chunk]))  # warm-up (and the compile, if any)
    sync(device)
    first_call = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, kept = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        prediction = predictor.predict((frames, audio))
        sync(device)
        times.append(time.perf_counter() - start)
        kept = prediction.num_instances
    seconds = statistics.median(times)
    result = {
        **row, "seconds": round(seconds, 4), "frames_per_s": round(row["frames"] / seconds, 2),
        "seconds_all": [round(s, 4) for s in times], "kept_instances": kept,
        "offloaded_features": predictor._options(frames.shape).offload_features,
        "first_call_s": round(first_call, 2), "peak_rss_mib": peak_rss_mib(),
    }  # fmt: skip
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    del predictor, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def throughput(args) -> None:
    device = torch.device("cpu" if args.cpu_smoke else args.device)
    results = {"machine": machine(), "rows": []}
    for row in throughput_rows(args):
        try:
            measured = measure_row(row, device, 1 if row["frames"] >= 600 else args.repeats)
        except Exception as err:  # record and go on: one failing row must not lose the rest
            measured = {**row, "error": f"{type(err).__name__}: {err}"[:500]}
        results["rows"].append(measured)
        merge_out(args.out, "throughput", results)
        print(json.dumps(measured), flush=True)
    print_table(results["rows"])


def print_table(rows: list[dict]) -> None:
    print("| preset | size | T | path | precision | compile | frames/s | peak GPU MiB | first call s |")
    print("| --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        path = "streaming" if r["streaming"] else "standard"
        print(f"| {r['preset']} | {r['height']}x{r['width']} | {r['frames']} | {path} | {r['precision']} | "
              f"{r['compile'] or '-'} | {r.get('frames_per_s', r.get('error', '?'))} | "
              f"{r.get('peak_gpu_mib', '-')} | {r.get('first_call_s', '-')} |")  # fmt: skip


# ---------------------------------------------------------------------- training speed
def train_speed(args) -> None:
    results = {"machine": machine(), "runs": []}
    preset = "avism_tiny" if args.cpu_smoke else "avism_r50"
    device = "cpu" if args.cpu_smoke else args.device
    for precision in args.precisions:
        out = Path(args.workdir) / f"train_{preset}_{precision}"
        cmd = [
            sys.executable, "-m", "avis.cli.main", "train", "--preset", preset, "--data", str(args.data),
            "--output", str(out), "--device", device, "--no-eval", "--precision", precision,
            f"iterations={args.iterations}", "log_every=1", f"checkpoint_every={args.iterations * 10}",
            "processes=1", f"data.num_workers={args.workers}",
        ]  # fmt: skip
        if args.cpu_smoke:
            cmd += ["data.short_sides=[64]", "data.max_size=128", "batch_size=2"]
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        run = {"preset": preset, "precision": precision, "iterations": args.iterations,
               "wall_s_including_startup": round(time.perf_counter() - start, 1)}  # fmt: skip
        if done.returncode:
            run["error"] = done.stderr[-1500:]
        else:
            records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            steps = [r for r in records if r.get("kind") == "train" and "seconds_per_iter" in r]
            steady = [r["seconds_per_iter"] for r in steps if r["iteration"] > min(WARMUP_ITERS, args.iterations - 1)]
            run["seconds_per_iter_median"] = round(statistics.median(steady), 4)
            run["iterations_per_s"] = round(1 / statistics.median(steady), 3)
        results["runs"].append(run)
        merge_out(args.out, "train_speed", results)
        print(json.dumps(run), flush=True)


# ---------------------------------------------------------------------- recipe evaluation
def recipe_eval(args) -> None:
    from avis.engine.evaluation import SplitEvaluator
    from avis.inference.predictor import VideoPredictor

    device = "cpu" if args.cpu_smoke else args.device
    weights = Path(args.run) / "model_final.pth"
    predictor = VideoPredictor.from_checkpoint(weights, device=device)
    records = [json.loads(x) for x in (Path(args.run) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    start = time.perf_counter()
    evaluator = SplitEvaluator(args.data, args.split, predictor.config, predictor.class_names,
                               max_videos=args.max_videos, precision=args.precision)  # fmt: skip
    metrics = evaluator(predictor.model)
    result = {
        "machine": machine(), "run": str(args.run), "split": args.split,
        "iterations": train[-1]["iteration"] if train else None,
        "train_wall_s_including_startup": args.train_wall_s,
        "eval_seconds": round(time.perf_counter() - start, 1),
        "metrics": {k: round(v, 2) for k, v in metrics.items()},
    }  # fmt: skip
    merge_out(args.out, "recipe", result)
    print(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=("throughput", "train-speed", "recipe-eval"))
    parser.add_argument("--out", type=Path, help="JSON file the results are merged into")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--big-precisions", nargs="+", default=["fp32", "bf16"], help="precisions of the Swin-L and 720p rows")
    parser.add_argument("--long-precision", default="bf16", help="precision of the T = 600 and compiled rows")
    parser.add_argument("--compile-modes", nargs="*", default=[], help="compiled rows: default reduce-overhead max-autotune")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row (T = 600 rows: 1)")
    parser.add_argument("--data", type=Path, help="synthetic AVISeg-layout root (train-speed, recipe-eval)")
    parser.add_argument("--workdir", default="/tmp/avis_gpu", help="train-speed run folders")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4, help="data-loader workers (train-speed)")
    parser.add_argument("--run", type=Path, help="recipe-eval: the run folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-videos", type=int, default=0)
    parser.add_argument("--train-wall-s", type=float, default=None, help="recipe-eval: the training command's wall time (recorded)")
    parser.add_argument("--precision", default=None, help="recipe-eval: inference precision (default: the device's)")
    args = parser.parse_args(argv)
    from avis.runtime import enable_huge_page_allocations

    enable_huge_page_allocations()
    {"throughput": throughput, "train-speed": train_speed, "recipe-eval": recipe_eval}[args.section](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
