"""`avis predict`: segment the sounding objects of video files, or of a whole AVISeg split.

Per video file it writes, under `--out/<video stem>/`:
  results.json    AVISeg results records (what `avis eval --pred` reads; video_id 1)
  summary.json    track summary: class, score, the time intervals in which each instance sounds
  overlay.mp4     the frames with coloured masks, with the original soundtrack
  timeline.png    one row per instance, coloured where it sounds
With `--data ROOT --split S` it writes one `--out/results.json` for the whole split, using the
split's precomputed audio features; under `torchrun` the videos are sharded across ranks.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

DEFAULT_OUT = "avis_predictions"
DEFAULT_FPS = 1.0
# --streaming value -> VideoPredictor streaming argument
STREAMING_CHOICES: dict[str, bool | Literal["auto"]] = {"auto": "auto", "yes": True, "no": False}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment the sounding objects of videos (or of a whole AVISeg split)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("videos", nargs="*", type=Path, help="video files (mp4, mkv, ...)")
    parser.add_argument(
        "--weights",
        type=Path,
        help="checkpoint (avis or official AVISM format); default: the shipped tiny checkpoint",
    )
    parser.add_argument(
        "--preset",
        help="model preset (avism_r50, avism_swinl, avism_tiny); needed for official checkpoints, "
        "checked against the config stored in avis checkpoints",
    )
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="output folder")
    parser.add_argument(
        "--fps", type=float, default=DEFAULT_FPS, help="frames sampled per second (AVIS: 1)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="keep instances scoring above this (default: the model's score threshold, 0.3)",
    )
    parser.add_argument(
        "--split-components",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give each separate blob of a track its own track (default: the model's setting; "
        "on for the shipped tiny checkpoint, off for official presets; docs/predict.md)",
    )
    parser.add_argument(
        "--allow-silent",
        action="store_true",
        help="accept videos without an audio stream (the model then hears silence)",
    )
    parser.add_argument(
        "--vggish-weights",
        type=Path,
        help="VGGish weights (torchvggish state dict); without them the weight-free audio "
        "features are used",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0, ...)")
    parser.add_argument(
        "--no-overlay", action="store_true", help="skip the overlay mp4 (the slowest output)"
    )
    parser.add_argument(
        "--streaming",
        choices=tuple(STREAMING_CHOICES),
        default="auto",
        help="memory-bounded inference (mask features via a temporary file; identical masks): yes, no, "
        "or auto = when the stored mask features of the video would exceed 1 GiB",
    )
    parser.add_argument(
        "--spill-dir",
        type=Path,
        help="folder for the temporary mask-feature file of the streaming path (default: the "
        "system temporary folder; it needs T x 14 MB at 360p)",
    )
    parser.add_argument(
        "--no-spill",
        action="store_true",
        help="streaming path: recompute the image features instead of writing them to disk",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the backbone and pixel decoder through torch.compile (CPU: ~1.6x faster "
        "model for R50, same outputs; costs 0.5-1.5 min per new frame-chunk shape, cached by "
        "PyTorch; falls back to eager if compiling fails)",
    )
    parser.add_argument(
        "--compile-mode",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode (implies --compile): reduce-overhead = CUDA graphs, "
        "max-autotune = tuned CUDA kernels (long first call)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "tf32", "bf16", "fp16"),
        default="auto",
        help="numeric precision: fp32 (strict, reproduces the official outputs), tf32, bf16 "
        "or fp16 autocast; auto (default) = fp32 on CPU, bf16 on CUDA",
    )
    parser.add_argument("--data", type=Path, help="AVISeg-layout root: predict a whole split")
    parser.add_argument("--split", default="test", help="split of --data (default: test)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from avis.errors import AvisError
    from avis.inference.predictor import VideoPredictor

    if not args.videos and args.data is None:
        raise AvisError("give video files or --data ROOT [--split test]")
    if args.videos and args.data is not None:
        raise AvisError("give either video files or --data, not both")
    predictor = VideoPredictor.from_checkpoint(
        args.weights,
        preset=args.preset,
        device=args.device,
        vggish_weights=args.vggish_weights,
        threshold=args.threshold,
        split_components=args.split_components,
        streaming=STREAMING_CHOICES[args.streaming],
        spill=not args.no_spill,
        spill_dir=args.spill_dir,
        precision=args.precision,
    )
    if args.compile or args.compile_mode:
        from avis.inference.accelerate import compile_for_inference

        mode = {} if args.compile_mode in (None, "default") else {"mode": args.compile_mode}
        compile_for_inference(predictor.model, parts=("backbone", "pixel_decoder"), **mode)
    if args.data is not None:
        from rich.console import Console

        path = predictor.predict_split(args.data, args.split, args.out)
        if path is not None:
            Console().print(f"results: {path}")
        return 0
    from avis.inference.report import predict_files

    predict_files(
        predictor,
        args.videos,
        args.out,
        fps=args.fps,
        allow_silent=args.allow_silent,
        overlay=not args.no_overlay,
    )
    return 0
