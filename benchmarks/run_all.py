"""The one benchmark entry point: the floor, per-stage cost, inference, evaluation, training.

    python benchmarks/run_all.py                                 # everything, default sizes
    python benchmarks/run_all.py --sections floor --stage-frames 2
    python benchmarks/run_all.py --sections inference --frames 18 60 240

Sections (each recorded with its command, machine, date and load average):
- ``floor``: sustained fp32 GEMM rate (2048^3, sampled between measurements), matrix FLOPs
  per frame of every stage of the preset at H x W (``torch.utils.flop_counter``, with
  closed-form cross-checks), measured seconds per frame, fraction of the floor
  (floor = FLOPs / GEMM rate; the time no implementation can beat).
- ``inference``: whole-video inference (``benchmarks/inference_speed.py``, one subprocess per
  T and mode: ``eager`` and ``compiled`` = ``avis.inference.accelerate`` on
  ``--compile-parts``) frames/s and peak memory at each T; ``floor_fraction`` = end-to-end
  floor time / measured time, with the floor per frame from the ``floor`` section (run
  together or earlier) and the GEMM rate sampled just before and after each run.
- ``eval``: evaluation throughput (``benchmarks/eval_speed.py`` at ``--eval-videos``).
- ``train``: training iterations/s of the tiny preset, 1 process vs 2 DDP processes.

Writes the latest numbers to ``benchmarks/results.json`` (sections not run keep their
previous values) and prints a table. Absolute times on a shared machine are inflated by
other load; the fractions are ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import GemmProbe, fmt_seconds, load_average, machine_info  # noqa: E402
from benchmarks.flops import deform_encoder_flops, stride4_conv3x3_flops  # noqa: E402

from avis.runtime import enable_huge_page_allocations  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.json"
SECTIONS = ("floor", "inference", "eval", "train")
# stages whose floors add up to the end-to-end model floor (audio and decode are reported apart)
E2E_STAGES = (
    "backbone",
    "pixel_decoder",
    "frame_decoder",
    "video_module",
    "mask_features",
    "mask_postprocess",
)


def section_record(args: argparse.Namespace) -> dict:
    return {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), **machine_info()}


# ---------------------------------------------------------------------- floor / stages
def run_floor(args: argparse.Namespace) -> dict:
    from benchmarks import stages as st

    probe = GemmProbe()
    probe.sample()
    model, cfg = st.build_model(args.preset)
    h, w = args.size
    frames = st.random_frames(args.stage_frames, h, w)
    audio = torch.randn(
        args.stage_frames, cfg.audio_dim, generator=torch.Generator().manual_seed(0)
    )
    results, extra = st.model_stages(
        model,
        cfg,
        frames,
        audio,
        args.repeats,
        probe,
        args.compile_parts if args.stage_compile else (),
    )
    del model
    if not args.skip_media:
        results += st.audio_stages(args.stage_frames, args.repeats, probe)
        decoded = st.decode_stage(Path(args.media), (h, w), args.repeats, probe)
        if decoded is not None:
            results.append(decoded)
    probe.sample()
    rate, cpu_rate = probe.rate, probe.cpu_rate
    stages = {r.name: r.as_dict(rate, cpu_rate) for r in results}
    e2e = [stages[n] for n in E2E_STAGES if n in stages]
    floor_s = sum(s["floor_seconds_per_frame"] for s in e2e)
    measured_s = sum(s["seconds_per_frame"] for s in e2e)
    cpu_floor_s = sum(s["gflops_per_frame"] for s in e2e) * 1e9 / cpu_rate
    cpu_s = sum(s["cpu_seconds_per_frame"] for s in e2e)
    # the same sum with the compiled stages where they were timed
    compiled_s = sum(
        stages.get(f"{n}+compiled", stages[n])["seconds_per_frame"] for n in E2E_STAGES if n in stages
    )
    hp, wp = h + (-h % cfg.size_divisibility), w + (-w % cfg.size_divisibility)
    tokens = sum((hp // s) * (wp // s) for s in (8, 16, 32))
    checks = {
        "pixel_decoder_stride4_conv3x3_gflops": stride4_conv3x3_flops((hp, wp), cfg.conv_dim) / 1e9,
        "pixel_decoder_deform_encoder_linear_gflops": deform_encoder_flops(
            tokens, cfg.conv_dim, cfg.pixel_decoder_heads, 3, cfg.pixel_decoder_points,
            cfg.pixel_decoder_ffn_dim, cfg.pixel_decoder_layers,
        ) / 1e9,
    }  # fmt: skip
    return {
        **section_record(args),
        "preset": args.preset,
        "size": [h, w],
        "padded_size": [hp, wp],
        "frames_per_call": args.stage_frames,
        "gemm": probe.as_dict(),
        "stages": stages,
        "stage_info": extra,
        "formula_checks": checks,
        "model_floor_seconds_per_frame": floor_s,
        "model_stage_seconds_per_frame": measured_s,
        "model_stage_fraction_of_floor": floor_s / measured_s,
        "model_stage_fraction_of_floor_cpu_time": cpu_floor_s / cpu_s,
        "model_stage_seconds_per_frame_compiled": compiled_s,
        "model_stage_fraction_of_floor_compiled": floor_s / compiled_s,
        "model_gflops_per_frame": sum(s["gflops_per_frame"] for s in e2e),
    }


# ---------------------------------------------------------------------- inference
def _subprocess_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_inference(args: argparse.Namespace, floor: dict | None) -> dict:
    from benchmarks import inference_speed

    probe = GemmProbe()
    rows = []
    for frames in args.frames:
        for mode in args.modes:
            if mode == "eager" and frames > args.eager_max_frames:
                continue  # long eager runs take too long on a shared 2-core machine
            parts = args.compile_parts if mode == "compiled" else []
            before = probe.sample()
            cmd = inference_speed.child_command(args, frames, args.variant, parts)
            row = {"mode": mode, **inference_speed.run_child(cmd)}
            row["record"] = {"date_utc": machine_info()["date_utc"], "load_average_1_5_15": load_average()}
            after = probe.sample()
            row["gemm_gflops_around_run"] = [before / 1e9, after / 1e9]
            if floor is not None and (floor["preset"], floor["size"]) == (args.preset, args.size):
                floor_s = frames * floor["model_gflops_per_frame"] * 1e9 / (0.5 * (before + after))
                row["floor_seconds"] = floor_s
                row["floor_fraction"] = floor_s / row["seconds"]
                cpu_rates = probe.cpu_rates[-2:]  # GEMM FLOP per CPU second, before and after
                cpu_floor_s = frames * floor["model_gflops_per_frame"] * 1e9 / (
                    0.5 * sum(cpu_rates)
                )
                row["gemm_gflops_per_cpu_second_around_run"] = [r / 1e9 for r in cpu_rates]
                row["floor_fraction_cpu_time"] = cpu_floor_s / row["cpu_seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {**section_record(args), "gemm": probe.as_dict(), "runs": rows}


# ---------------------------------------------------------------------- eval / train
def run_eval(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(BENCH))
    import eval_speed  # the evaluation colleague's benchmark

    ns = argparse.Namespace(
        videos=args.eval_videos, frames=61, height=720, width=1280, seed=0,
    )  # fmt: skip
    gt_path, pred_path = eval_speed.build_case(ns, Path("/tmp/avis_eval_bench"))
    rows = []
    for protocol in ("official", "fixed"):
        cmd = [sys.executable, str(BENCH / "eval_speed.py"), "--run-one", str(gt_path),
               str(pred_path), protocol]  # fmt: skip
        row = _subprocess_json(cmd)
        gt = json.loads(Path(gt_path).read_text())
        row["videos"] = len(gt["videos"])
        row["frames"] = sum(len(v["file_names"]) for v in gt["videos"])
        row["videos_per_s"] = row["videos"] / row["wall_s"]
        row["frames_per_s"] = row["frames"] / row["wall_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {**section_record(args), "size": "720x1280, ~61 frames/video", "runs": rows}


def run_train(args: argparse.Namespace) -> dict:
    from benchmarks import train_speed

    return {**section_record(args), **train_speed.measure(args.train_iters)}


# ---------------------------------------------------------------------- report
def print_tables(results: dict) -> None:
    floor = results.get("floor")
    if floor:
        rate = floor["gemm"]["gflops_median"]
        print(f"\nfloor: {floor['preset']} {floor['size'][0]}x{floor['size'][1]} "
              f"(padded {floor['padded_size'][0]}x{floor['padded_size'][1]}), "
              f"GEMM {rate:.1f} GFLOP/s, load {floor['load_average_1_5_15']}")  # fmt: skip
        print(
            f"{'stage':<20}{'GFLOP/frame':>12}{'s/frame':>12}{'floor s/frame':>15}{'of floor':>10}"
        )
        for name, s in floor["stages"].items():
            frac = s["fraction_of_floor"]
            print(f"{name:<20}{s['gflops_per_frame']:>12.2f}{fmt_seconds(s['seconds_per_frame']):>12}"
                  f"{fmt_seconds(s['floor_seconds_per_frame']):>15}"
                  f"{'' if not frac else f'{frac:.0%}':>10}")  # fmt: skip
        print(f"{'model (sum)':<20}{floor['model_gflops_per_frame']:>12.2f}"
              f"{fmt_seconds(floor['model_stage_seconds_per_frame']):>12}"
              f"{fmt_seconds(floor['model_floor_seconds_per_frame']):>15}"
              f"{floor['model_stage_fraction_of_floor']:>10.0%}")  # fmt: skip
        if "model_stage_fraction_of_floor_cpu_time" in floor:
            print(f"{'  (in CPU time)':<59}{floor['model_stage_fraction_of_floor_cpu_time']:>10.0%}")
        if floor.get("model_stage_seconds_per_frame_compiled", 0) < floor["model_stage_seconds_per_frame"]:
            print(f"{'model (compiled)':<20}{'':>12}"
                  f"{fmt_seconds(floor['model_stage_seconds_per_frame_compiled']):>12}{'':>15}"
                  f"{floor['model_stage_fraction_of_floor_compiled']:>10.0%}")  # fmt: skip
    inf = results.get("inference")
    if inf:
        print(f"\n{'T':>5}{'mode':>10}{'variant':>10}{'s':>9}{'frames/s':>10}{'peak MB':>9}"
              f"{'encoder':>9}{'warm-up':>9}{'floor frac':>12}{'(CPU time)':>11}")  # fmt: skip
        for r in inf["runs"]:
            frac, cpu_frac = r.get("floor_fraction"), r.get("floor_fraction_cpu_time")
            print(f"{r['frames']:>5}{r['mode']:>10}{r['variant']:>10}{r['seconds']:>9.1f}"
                  f"{r['fps']:>10.3f}{r['peak_mb']:>9.0f}{r['encoder_share']:>9.0%}"
                  f"{r['warmup_s']:>8.0f}s{'' if frac is None else f'{frac:.0%}':>12}"
                  f"{'' if cpu_frac is None else f'{cpu_frac:.0%}':>11}")  # fmt: skip
    ev = results.get("eval")
    if ev:
        for r in ev["runs"]:
            print(f"eval {r['protocol']:>9}: {r['videos']} videos / {r['frames']} frames in "
                  f"{r['wall_s']:.1f} s = {r['frames_per_s']:.0f} frames/s, "
                  f"peak {r['peak_rss_gib']:.2f} GiB")  # fmt: skip
    tr = results.get("train")
    if tr:
        for r in tr["runs"]:
            print(
                f"train {r['processes']} process(es): {r['iterations_per_s']:.2f} it/s "
                f"({r['clips_per_s']:.2f} clips/s)"
            )
    if "floor_fraction" in results:
        print(f"\nfloor_fraction (end-to-end R50 inference): {results['floor_fraction']:.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--preset", default="avism_r50")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    parser.add_argument("--stage-frames", type=int, default=4, help="frames per stage call")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per stage")
    parser.add_argument(
        "--stage-compile", action="store_true", help="also time the --compile-parts stages compiled"
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[18, 60, 240], help="T list")
    parser.add_argument(
        "--variant", default="standard", choices=["standard", "streaming", "spilled"],
        help="inference path (benchmarks/inference_speed.py --help)",
    )  # fmt: skip
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["eager", "compiled"],
        choices=["eager", "compiled"],
        help="inference runs per T",
    )
    parser.add_argument("--compile-parts", nargs="+", default=["backbone", "pixel_decoder"])
    parser.add_argument("--eager-max-frames", type=int, default=60,
                        help="skip eager inference runs above this T")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--eval-videos", type=int, default=20)
    parser.add_argument("--train-iters", type=int, default=10)
    parser.add_argument("--media", default=str(ROOT.parent / "shared/media/bigbuckbunny.mp4"))
    parser.add_argument("--skip-media", action="store_true", help="no audio/decode stages")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    enable_huge_page_allocations()  # as the avis CLI does; before the first tensor (and children)

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    start = time.perf_counter()
    if "floor" in args.sections:
        results["floor"] = run_floor(args)
    if "inference" in args.sections:
        previous = results.get("inference", {})
        results["inference"] = run_inference(args, results.get("floor"))
        # keep earlier runs of other (T, mode, parts), each with its own record
        done = {
            (r["preset"], r["frames"], r["mode"], tuple(r["compile"]))
            for r in results["inference"]["runs"]
        }
        for row in previous.get("runs", []):
            key = (row["preset"], row["frames"], row.get("mode", "eager"), tuple(row.get("compile", [])))
            if key not in done:
                row.setdefault("record", {k: previous.get(k) for k in ("date_utc", "command", "load_average_1_5_15")})
                results["inference"]["runs"].append(row)
        runs = [r for r in results["inference"]["runs"] if "floor_fraction" in r]
        if runs and args.preset == "avism_r50":
            first = [r for r in runs if r["frames"] == runs[0]["frames"]]  # the first T
            best = max(first, key=lambda r: r["floor_fraction"])
            results["floor_fraction"] = best["floor_fraction"]
            results["floor_fraction_run"] = {k: best[k] for k in ("frames", "mode", "compile")}
    if "eval" in args.sections:
        results["eval"] = run_eval(args)
    if "train" in args.sections:
        results["train"] = run_train(args)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print_tables(results)
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
