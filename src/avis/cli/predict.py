"""`avis predict`: segment the sounding objects of video files, or of a whole AVISeg split.

Per video file it writes, under `--out/<video stem>/`:
  results.json    AVISeg results records (what `avis eval --pred` reads; video_id 1)
  summary.json    track summary: class, score, the time intervals in which each instance sounds
  overlay.mp4     the frames with coloured masks, with the original soundtrack
  timeline.png    one row per instance, coloured where it sounds
With `--data ROOT --split S` it writes one `--out/results.json` for the whole split, using the
split's precomputed audio features; under `torchrun` the videos are sharded across ranks.

Outputs of an earlier run are not overwritten without --force; arguments and output paths
are checked before the model is loaded. A video that cannot be read is reported and the
others still run (exit code 1 when any failed).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from avis.cli import args as types
from avis.cli import predict_online

DEFAULT_OUT = "avis_predictions"
RESULTS_NAME = "results.json"  # of a whole split (avis.inference.split_predict)
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
        "--force", action="store_true", help="overwrite the outputs of an earlier run in --out"
    )
    parser.add_argument(
        "--fps", type=types.sampling_fps, default=DEFAULT_FPS,
        help="frames sampled per second (AVIS: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--threshold",
        type=types.probability,
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
    parser.add_argument(
        "--device", type=types.device, default="cpu", help="torch device (cpu, cuda, cuda:0, ...)"
    )
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
        choices=types.PRECISION_CHOICES,
        default="auto",
        help="numeric precision: fp32 (strict, reproduces the official outputs), tf32, bf16 "
        "or fp16 autocast; auto (default) = fp32 on CPU, bf16 on CUDA",
    )
    parser.add_argument("--data", type=Path, help="AVISeg-layout root: predict a whole split")
    parser.add_argument("--split", default="test", help="split of --data (default: test)")
    predict_online.add_arguments(parser)
    parser.set_defaults(func=handle)


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model is loaded (standard library only)."""
    from avis.errors import AvisError
    from avis.io.outputs import (
        check_input_file,
        check_output_dir,
        check_output_file,
        special_file_kind,
    )

    if args.online is None and args.realtime:
        raise AvisError("--realtime paces an --online source")
    if args.online is not None and (args.videos or args.data is not None):
        raise AvisError("--online takes its SOURCE alone: no video files or --data with it")
    if not args.videos and args.data is None and args.online is None:
        raise AvisError("give video files, --data ROOT [--split test] or --online SOURCE")
    if args.videos and args.data is not None:
        raise AvisError("give either video files or --data, not both")
    for option, path in (("--weights", args.weights), ("--vggish-weights", args.vggish_weights)):
        if path is not None:
            check_input_file(path, f"{option} file")
    if args.spill_dir is not None:
        check_output_dir(args.spill_dir, option="--spill-dir")
    if args.online is not None:
        predict_online.check_arguments(args)
        return
    if args.data is not None:
        from avis.data.paths import check_split_name

        check_split_name(args.split)
        if not args.data.is_dir():
            raise AvisError(f"{args.data}: --data must be a data set folder (holding {args.split}.json)")
        check_input_file(args.data / f"{args.split}.json", f"annotation file of split {args.split!r}")
        check_output_dir(args.out)
        check_output_file(args.out / RESULTS_NAME, force=args.force, inputs=[args.data / f"{args.split}.json"])
        return
    folders = [str(v) for v in args.videos if v.is_dir()]
    if folders:
        raise AvisError(f"{', '.join(folders)}: a folder, not a video file (give the files in it)")
    special = [f"{v} ({special_file_kind(v)})" for v in args.videos if v.exists() and not v.is_file()]
    if special:  # "not found" was wrong for them; a pipe streams through --online
        raise AvisError(
            f"not regular files: {', '.join(special)}; a video must be a file (a pipe or a stream: --online SOURCE)"
        )
    missing = [str(v) for v in args.videos if not v.is_file()]
    if missing:
        raise AvisError(f"video file(s) not found: {', '.join(missing)}")
    from avis.inference.report import check_outputs  # light: rich and the results writer

    check_outputs(args.videos, args.out, force=args.force)


def load_predictor(args: argparse.Namespace, **options):
    """The VideoPredictor of the command's model options (weights, preset, device, threshold,
    splitting, precision, compile), with `options` for the path-specific ones."""
    from avis.inference.predictor import VideoPredictor

    predictor = VideoPredictor.from_checkpoint(
        args.weights,
        preset=args.preset,
        device=args.device,
        vggish_weights=args.vggish_weights,
        threshold=args.threshold,
        split_components=args.split_components,
        precision=args.precision,
        **options,
    )
    if args.compile or args.compile_mode:
        from avis.inference.accelerate import compile_for_inference

        mode = {} if args.compile_mode in (None, "default") else {"mode": args.compile_mode}
        compile_for_inference(predictor.model, parts=("backbone", "pixel_decoder"), **mode)
    return predictor


def handle(args: argparse.Namespace) -> int:
    check_arguments(args)
    if args.online is not None:
        return predict_online.handle(args)
    predictor = load_predictor(
        args,
        streaming=STREAMING_CHOICES[args.streaming],
        spill=not args.no_spill,
        spill_dir=args.spill_dir,
    )
    if args.data is not None:
        from rich.console import Console

        path = predictor.predict_split(args.data, args.split, args.out)
        if path is not None:
            Console().print(f"results: {path}", markup=False)
        return 0
    from avis.inference.report import predict_files

    failures: list[tuple[Path, str]] = []
    done = predict_files(
        predictor,
        args.videos,
        args.out,
        fps=args.fps,
        allow_silent=args.allow_silent,
        overlay=not args.no_overlay,
        failures=failures,
    )
    if failures:
        import sys

        print(f"avis predict: {len(failures)} of {len(done) + len(failures)} videos failed:", file=sys.stderr)
        for video, message in failures:  # messages name their file; others get it prefixed
            print(f"  {message}" if message.startswith(str(video)) else f"  {video}: {message}", file=sys.stderr)
        return 1
    return 0
