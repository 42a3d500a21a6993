"""Whole-video inference speed and peak memory of AVISM (random weights).

    python benchmarks/model_speed.py                       # R50, 360x640, T = 18 and 60
    python benchmarks/model_speed.py --frames 6 --preset avism_tiny --size 128 128

Each (T, variant) runs in a fresh subprocess so that its peak memory (max RSS on CPU,
max allocated on CUDA) is its own. Reports frames per second of the whole inference
(frame encoding + video module + mask post-processing), the share of the image encoder
(backbone + pixel decoder + frame decoder, all passes), peak memory and the number of kept
instances. Variants: ``standard`` (official procedure, keeps every frame's mask features)
and ``streaming`` (memory-bounded, one more image-encoder pass).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

KIB = 1024
MIB = 1024 * 1024


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB  # Linux: KiB


def run_single(args: argparse.Namespace) -> dict:
    from avis.inference.video import (
        InferenceOptions,
        frames_encoder,
        predict_video,
        predict_video_streaming,
    )
    from avis.models import PRESETS, build_avism

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = PRESETS[args.preset]()
    model = build_avism(cfg).eval().to(device)
    h, w = args.size
    frames = torch.randint(0, 256, (args.single_frames, 3, h, w), dtype=torch.uint8)
    audio = torch.randn(args.single_frames, cfg.audio_dim)
    options = InferenceOptions.from_config(cfg)
    run = predict_video_streaming if args.variant == "streaming" else predict_video

    encode, input_size, padded = frames_encoder(model, frames, audio)
    encoder_seconds = [0.0]

    def timed_encode(start: int, stop: int, with_queries: bool, carry=None):
        t0 = time.perf_counter()
        out = encode(start, stop, with_queries, carry)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        encoder_seconds[0] += time.perf_counter() - t0
        return out

    # warm-up on two frames (allocator, kernels), then measure
    run(
        model,
        frames_encoder(model, frames[:2], audio[:2])[0],
        audio[:2],
        input_size,
        padded,
        None,
        options,
    )
    baseline_mb = _peak_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    encoder_seconds[0] = 0.0
    t0 = time.perf_counter()
    pred = run(model, timed_encode, audio, input_size, padded, None, options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return {
        "preset": args.preset,
        "variant": args.variant,
        "frames": args.single_frames,
        "size": f"{h}x{w}",
        "seconds": round(seconds, 2),
        "fps": round(args.single_frames / seconds, 3),
        "encoder_share": round(encoder_seconds[0] / seconds, 3),
        "peak_mb": round(_peak_mb(device)),
        "peak_mb_after_warmup_before_run": round(baseline_mb),
        "kept": int(pred.scores.numel()),
        "threads": args.threads,
        "device": str(device),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="avism_r50")
    parser.add_argument("--frames", type=int, nargs="+", default=[18, 60])
    parser.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    parser.add_argument("--variants", nargs="+", default=["standard", "streaming"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--single-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single_frames:
        print(json.dumps(run_single(args)))
        return 0
    rows = []
    for frames in args.frames:
        for variant in args.variants:
            cmd = [
                sys.executable, __file__, "--preset", args.preset, "--size", *map(str, args.size),
                "--threads", str(args.threads), "--device", args.device,
                "--single-frames", str(frames), "--variant", variant,
            ]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| preset | variant | T | size | s | frames/s | encoder share | peak MB | kept |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['preset']} | {r['variant']} | {r['frames']} | {r['size']} | {r['seconds']} | "
            f"{r['fps']} | {r['encoder_share']:.0%} | {r['peak_mb']} | {r['kept']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
