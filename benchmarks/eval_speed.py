"""Evaluation speed and memory at AVISeg-test size, in the official and the fixed protocol.

Builds a synthetic case shaped like the AVISeg test split (205 videos x ~61 frames at 720p,
~5 GT and ~10 predicted tracks per video; GT as polygons, predictions as compressed RLEs),
writes it as gt.json / results.json, then runs `avis.eval.evaluate` on the files once per
protocol, each in a fresh process, and reports wall time, CPU time and peak resident memory.

    python benchmarks/eval_speed.py                      # full size
    python benchmarks/eval_speed.py --videos 20          # quick
    python benchmarks/eval_speed.py --reference          # also time trackeval's HOTA + TrackMAP

`--reference` times the TrackEval part of the official evaluator (stock trackeval HOTA and
TrackMAP on the same data, fed per video and class as TrackEval's YouTube-VIS reader does),
a lower bound for the official evaluator, which adds FSLA on top.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KIB_PER_GIB = 1024**2


def build_case(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    from avis.eval.synthetic import SyntheticSpec, make_case

    tag = f"v{args.videos}_f{args.frames}_{args.height}x{args.width}_s{args.seed}"
    gt_path, pred_path = folder / f"gt_{tag}.json", folder / f"results_{tag}.json"
    if gt_path.exists() and pred_path.exists():
        return gt_path, pred_path
    spread = args.frames // 4
    spec = SyntheticSpec(
        num_videos=args.videos,
        frames=(args.frames - spread, args.frames + spread),
        height=args.height,
        width=args.width,
        gt_tracks=(3, 7),  # ~5 per video
        preds_per_gt=(1, 2),  # ~7.5 per video ...
        false_positives=(1, 4),  # ... + ~2.5 = ~10 per video
        class_pool=26,
    )
    start = time.perf_counter()
    gt, preds = make_case(np.random.default_rng(args.seed), spec)
    folder.mkdir(parents=True, exist_ok=True)
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(preds))
    print(f"built case in {time.perf_counter() - start:.1f} s: {len(gt['videos'])} videos, "
          f"{sum(len(v['file_names']) for v in gt['videos'])} frames, "
          f"{len(gt['annotations'])} GT tracks, {len(preds)} predicted tracks, "
          f"{pred_path.stat().st_size / 1e6:.0f} MB of predictions", flush=True)
    return gt_path, pred_path


def run_one(gt_path: str, pred_path: str, protocol: str) -> dict:
    """In this process: load both files and evaluate; return times and peak memory.

    Imports happen before the clock starts."""
    if protocol == "reference":
        import trackeval  # noqa: F401
    else:
        import avis.eval  # noqa: F401
    wall, cpu = time.perf_counter(), time.process_time()
    if protocol == "reference":
        sys.path.insert(0, str(Path(__file__).parent))
        from trackeval_reference import reference_scores

        metrics = reference_scores(gt_path, pred_path)
        gt_cpu = None
    else:
        from avis.eval import evaluate, load_ground_truth

        gt = load_ground_truth(gt_path)  # JSON + polygon rasterisation
        gt_cpu = time.process_time() - cpu
        metrics = evaluate(gt, pred_path, protocol=protocol).metrics
    return {
        "protocol": protocol,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "gt_cpu_s": gt_cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB,
        "metrics": {k: metrics[k] for k in ("FA", "HOTA", "AP_all") if k in metrics},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=205)
    parser.add_argument("--frames", type=int, default=61, help="mean frames per video")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avis_eval_bench"))
    parser.add_argument("--protocols", nargs="*", default=["official", "fixed"])
    parser.add_argument("--reference", action="store_true", help="also time trackeval HOTA+TrackMAP")
    parser.add_argument("--run-one", nargs=3, metavar=("GT", "PRED", "PROTOCOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_one(*args.run_one)))
        return 0
    gt_path, pred_path = build_case(args, args.workdir)
    protocols = args.protocols + (["reference"] if args.reference else [])
    for protocol in protocols:
        out = subprocess.run(
            [sys.executable, __file__, "--run-one", str(gt_path), str(pred_path), protocol],
            capture_output=True, text=True,
        )
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        result = json.loads(out.stdout.strip().splitlines()[-1])
        gt_part = f" (GT parsing {result['gt_cpu_s']:.1f} s)" if result["gt_cpu_s"] is not None else ""
        print(f"{protocol:>9}: wall {result['wall_s']:6.1f} s  cpu {result['cpu_s']:6.1f} s{gt_part}  "
              f"peak RSS {result['peak_rss_gib']:.2f} GiB  {result['metrics']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
