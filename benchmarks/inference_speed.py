"""Whole-video inference frames/s and peak memory, eager or with compiled parts.

    python benchmarks/inference_speed.py --frames 18 --compile backbone
    python benchmarks/inference_speed.py --frames 6 --preset avism_tiny --size 128 224

One subprocess per T (``--single T``) so that each peak memory is its own. In the subprocess:
build the preset with seeded random weights, warm up (eager: one frame; compiled: every
chunk shape the run will use, where ``torch.compile`` compiles; reported as ``warmup_s``), reset the
peak-RSS mark, then time ``predict_video`` (or a memory-bounded variant) on T random frames.
Prints one JSON line per run: seconds, frames/s, time in the image encoder (all chunk
passes), peak RSS during the run, number of kept instances.

Letters: T frames, t frames of a chunk, h x w input size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import PeakMemory  # noqa: E402

from avis.runtime import enable_huge_page_allocations  # noqa: E402

MIB = 2**20
VARIANTS = ["standard", "streaming", "spilled"]
VARIANT_HELP = (
    "standard: all mask features in RAM (the official procedure); streaming: memory-bounded, "
    "image features recomputed; spilled: memory-bounded, mask features via a temporary file"
)


def run_single(args: argparse.Namespace) -> dict:
    from benchmarks.stages import build_model, random_frames

    from avis.inference.accelerate import compile_for_inference
    from avis.inference.spill import FeatureSpill
    from avis.inference.video import (
        InferenceOptions,
        frames_encoder,
        predict_video,
        predict_video_streaming,
    )
    from avis.models.pixel_decoder import MSDeformAttnEncoderLayer

    torch.set_num_threads(args.threads)
    if args.encoder_block_rows is not None:  # A/B of the pixel decoder's row blocks
        MSDeformAttnEncoderLayer.block_rows = args.encoder_block_rows
    model, cfg = build_model(args.preset)
    if args.compile:
        compile_for_inference(model, args.compile)
    h, w = args.size
    frames = random_frames(args.single, h, w).round().to(torch.uint8)
    audio = torch.randn(args.single, cfg.audio_dim, generator=torch.Generator().manual_seed(1))
    options = InferenceOptions.from_config(cfg)
    if args.run_chunk_size:
        options = replace(options, run_chunk_size=args.run_chunk_size)
    spill = FeatureSpill() if args.variant == "spilled" else None  # system temporary folder
    run = predict_video if args.variant == "standard" else predict_video_streaming
    extra = {} if args.variant == "standard" else {"spill": spill}
    encode, input_size, padded = frames_encoder(model, frames, audio)

    start = time.perf_counter()
    chunk = options.run_chunk_size
    sizes = {min(chunk, args.single), args.single % chunk} - {0} if args.compile else {1}
    with torch.no_grad():
        for size in sorted(sizes):  # every chunk shape of the run (compiles here)
            encode(0, size, True)
    warmup_s = time.perf_counter() - start

    encoder_s = [0.0]

    def timed_encode(first: int, stop: int, with_queries: bool):
        t0 = time.perf_counter()
        out = encode(first, stop, with_queries)
        encoder_s[0] += time.perf_counter() - t0
        return out

    with PeakMemory() as peak:
        t0, cpu0, sys0 = time.perf_counter(), time.process_time(), os.times().system
        pred = run(model, timed_encode, audio, input_size, padded, None, options, **extra)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        system_s = os.times().system - sys0
    if spill is not None:
        spill.close()
    return {
        "preset": args.preset,
        "variant": args.variant,
        "compile": list(args.compile),
        "frames": args.single,
        "size": [h, w],
        "seconds": seconds,
        "cpu_seconds": cpu_s,
        "system_seconds": system_s,  # kernel time (page faults of fresh tensors, mostly)
        "fps": args.single / seconds,
        "encoder_s": encoder_s[0],
        "encoder_share": encoder_s[0] / seconds,
        "warmup_s": warmup_s,
        "peak_mb": None if peak.peak_bytes is None else peak.peak_bytes / MIB,
        "peak_reset": peak.reset,
        "kept": int(pred.scores.numel()),
        "threads": args.threads,
        "encoder_block_rows": MSDeformAttnEncoderLayer.block_rows,
        "run_chunk_size": options.run_chunk_size,
    }


def child_command(args: argparse.Namespace, frames: int, variant: str, compile_parts) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--preset", args.preset,
        "--size", *map(str, args.size), "--threads", str(args.threads),
        "--single", str(frames), "--variant", variant, "--compile", *compile_parts,
    ] + ([] if getattr(args, "encoder_block_rows", None) is None
          else ["--encoder-block-rows", str(args.encoder_block_rows)]) + (
          ["--run-chunk-size", str(args.run_chunk_size)] if getattr(args, "run_chunk_size", None)
          else [])  # fmt: skip


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="avism_r50")
    parser.add_argument("--frames", type=int, nargs="+", default=[18])
    parser.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    parser.add_argument("--variant", default="standard", choices=VARIANTS, help=VARIANT_HELP)
    parser.add_argument("--compile", nargs="*", default=[], help="parts to torch.compile")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--encoder-block-rows", type=int, help="pixel decoder query block (0: one block; default: the model's)"
    )
    parser.add_argument(
        "--run-chunk-size", type=int, help="frames per image-encoder chunk (default: the preset's)"
    )
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    enable_huge_page_allocations()  # as the avis CLI does; before the first tensor (and children)
    if args.single:
        print(json.dumps(run_single(args)))
        return 0
    for frames in args.frames:
        print(json.dumps(run_child(child_command(args, frames, args.variant, args.compile))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
