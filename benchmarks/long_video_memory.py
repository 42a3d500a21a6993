"""Peak memory of whole-video inference vs video length (the "Long videos" benchmark).

Each measurement runs in a fresh subprocess: build the model (random weights of the preset),
then `VideoPredictor.predict` on T synthetic frames of the given size with random audio
features, and report the process's peak resident memory (VmHWM), the resident memory after the
model was built (baseline) and the wall time. Frames are produced lazily chunk by chunk (as a
decoder would), so the input does not count; the prediction keeps masks as RLE.

To make the mask pass do real work with random weights, every top-k candidate is kept
(threshold 0) and top-k is set by --keep.

    python benchmarks/long_video_memory.py --frames 60 600 --size 360 640 --mode streaming
    python benchmarks/long_video_memory.py --frames 60 --mode straightforward
    python benchmarks/long_video_memory.py --frames 60 --mode streaming-recompute
    python benchmarks/long_video_memory.py --frames 60 600 --phase video_module
    python benchmarks/long_video_memory.py --frames 60 600 --compile backbone pixel_decoder

Letters: T frames, H x W frame size, D audio size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

MIB = 2**20
KIB = 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class LazyFrames:
    """(T, H, W, 3) uint8 frames made on demand for a slice (a moving gradient + squares)."""

    def __init__(self, num_frames: int, height: int, width: int) -> None:
        self.shape = (num_frames, height, width, 3)
        self.dtype = "uint8"
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        import numpy as np

        t_idx = range(*index.indices(self.shape[0])) if isinstance(index, slice) else [index]
        _, h, w, _ = self.shape
        yy, xx = np.mgrid[0:h, 0:w]
        out = np.empty((len(t_idx), h, w, 3), np.uint8)
        for i, t in enumerate(t_idx):
            out[i, ..., 0] = (xx + 3 * t) % 256
            out[i, ..., 1] = (yy + 5 * t) % 256
            out[i, ..., 2] = 128
            y0, x0 = (20 + 4 * t) % (h - 64), (30 + 7 * t) % (w - 64)
            out[i, y0 : y0 + 64, x0 : x0 + 64] = (230, 40, 40)
        return out if isinstance(index, slice) else out[0]


def measure(
    preset: str, frames: int, height: int, width: int, mode: str, keep: int, threads: int,
    short_side: int | None = None, compile_parts: tuple[str, ...] = (), chunk: int | None = None,
) -> dict:
    """One measurement in this process (call it in a fresh one)."""
    import numpy as np
    import torch

    from avis.inference.predictor import VideoPredictor
    from avis.inference.shipped import ModelInfo
    from avis.models.avism import build_avism
    from avis.models.config import PRESETS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = replace(PRESETS[preset](), top_k=keep)
    if short_side is not None:  # network input size (the preset's test resize by default)
        cfg = replace(cfg, test_short_side=short_side, test_max_size=max(cfg.test_max_size, 4 * short_side))
    if chunk is not None:  # image-encoder chunk (frames per call); None: the predictor's choice
        cfg = replace(cfg, test_run_chunk_size=chunk)
    model = build_avism(cfg).eval()
    if compile_parts:
        from avis.inference.accelerate import compile_for_inference

        compile_for_inference(model, compile_parts)
    info = ModelInfo("random weights", "avis", [f"c{i}" for i in range(cfg.num_classes)], "weight_free")
    predictor = VideoPredictor(
        model, cfg, info, threshold=0.0, streaming=mode != "straightforward",
        spill=mode == "streaming", streaming_chunk_size=chunk if chunk is not None else "auto",
    )  # fmt: skip
    audio = np.random.default_rng(0).standard_normal((frames, cfg.audio_dim)).astype(np.float32)
    source = LazyFrames(frames, height, width)
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    prediction = predictor.predict((source, audio))
    seconds = time.perf_counter() - start
    return {
        "preset": preset, "frames": frames, "size": [height, width], "mode": mode,
        "instances": prediction.num_instances, "threads": threads,
        "network_short_side": cfg.test_short_side, "compiled": list(compile_parts),
        "run_chunk_size": predictor._options(source.shape, mode != "straightforward").run_chunk_size,
        "baseline_rss_mib": round(baseline * KIB / MIB, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") * KIB / MIB, 1),
        "seconds": round(seconds, 1), "seconds_per_frame": round(seconds / frames, 3),
    }  # fmt: skip


def measure_video_module(preset: str, frames: int, threads: int) -> dict:
    """Only the T-dependent part of streaming inference: the video module once over T frames of
    random frame queries (T, fQ, C), with the candidate selection."""
    import torch

    from avis.inference.postprocess import select_candidates
    from avis.models.avism import build_avism
    from avis.models.config import PRESETS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = PRESETS[preset]()
    model = build_avism(cfg).eval()
    queries = torch.randn(frames, cfg.frame_queries, cfg.frame_hidden_dim)
    audio = torch.randn(frames, cfg.audio_dim)
    baseline = _status_kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        video = model.decode_video(queries, audio)
        select_candidates(video.pred_logits[-1, 0, 0], cfg.top_k)
    seconds = time.perf_counter() - start
    return {
        "preset": preset, "frames": frames, "phase": "video_module", "threads": threads,
        "baseline_rss_mib": round(baseline * KIB / MIB, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") * KIB / MIB, 1),
        "seconds": round(seconds, 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="avism_r50")
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 600])
    parser.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    parser.add_argument(
        "--mode", choices=("streaming", "streaming-recompute", "straightforward"), default="streaming",
        help="streaming: memory-bounded, mask features spilled to a temporary file (default); "
        "streaming-recompute: memory-bounded, image features recomputed; straightforward: all "
        "mask features in RAM",
    )  # fmt: skip
    parser.add_argument(
        "--short-side", type=int, default=None,
        help="override the preset's test short side (network input size); default: the preset's",
    )  # fmt: skip
    parser.add_argument("--keep", type=int, default=10, help="top-k candidates kept (threshold 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--phase", choices=("all", "video_module"), default="all",
        help="all: whole inference; video_module: only the part whose memory depends on T",
    )  # fmt: skip
    parser.add_argument(
        "--compile", nargs="*", default=[], metavar="PART",
        help="parts run through avis.inference.accelerate (e.g. backbone pixel_decoder)",
    )  # fmt: skip
    parser.add_argument(
        "--chunk", type=int, default=None,
        help="image-encoder chunk size (default: the predictor's choice for the path)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="append the results (JSON lines) here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.one:
        if args.phase == "video_module":
            result = measure_video_module(args.preset, args.frames[0], args.threads)
        else:
            result = measure(
                args.preset, args.frames[0], *args.size, args.mode, args.keep, args.threads,
                args.short_side, tuple(args.compile), args.chunk,
            )  # fmt: skip
        print(json.dumps(result))
        return 0
    results = []
    for frames in args.frames:
        cmd = [sys.executable, __file__, "--one", "--preset", args.preset, "--frames", str(frames),
               "--size", *map(str, args.size), "--mode", args.mode, "--keep", str(args.keep),
               "--threads", str(args.threads), "--phase", args.phase]  # fmt: skip
        if args.short_side is not None:
            cmd += ["--short-side", str(args.short_side)]
        if args.compile:
            cmd += ["--compile", *args.compile]
        if args.chunk is not None:
            cmd += ["--chunk", str(args.chunk)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        results.append(result)
        if args.json:
            with args.json.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"peak RSS {last['frames']} vs {first['frames']} frames: "
            f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x; above baseline: "
            f"{(last['peak_rss_mib'] - last['baseline_rss_mib']) / max(first['peak_rss_mib'] - first['baseline_rss_mib'], 1e-9):.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
