"""`avis demo`: the embedded default, offline right after `pip install`.

Runs `avis predict` with the shipped tiny checkpoint (trained on the synthetic benchmark) on
the bundled 12-second synthetic video with its soundtrack, prints the sounding instances and
where the outputs are, and copies the video's ground truth beside them so the results can be
scored with `avis eval`. Each run rewrites the demo's own output files in `--out/demo/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avis.cli import args as types

DEFAULT_OUT = "avis_demo"
GROUND_TRUTH_FILE = "ground_truth.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="predict on the bundled synthetic video with the shipped tiny checkpoint (offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="output folder")
    parser.add_argument(
        "--weights", type=Path, help="another avis checkpoint (default: the shipped one)"
    )
    parser.add_argument(
        "--threshold", type=types.probability, default=None,
        help="score threshold, 0..1 (default: the checkpoint's, 0.3)",
    )  # fmt: skip
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay mp4")
    parser.add_argument(
        "--device", type=types.device, default="cpu", help="torch device (cpu, cuda, cuda:0, ...)"
    )
    parser.add_argument(
        "--precision",
        choices=types.PRECISION_CHOICES,
        default="auto",
        help="numeric precision (auto: fp32 on CPU, bf16 on CUDA)",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from avis.errors import MediaError
    from avis.inference.predictor import VideoPredictor
    from avis.inference.report import check_outputs, predict_files
    from avis.inference.shipped import DEMO_ANNOTATIONS, DEMO_VIDEO, asset_path
    from avis.io.atomic import write_bytes_atomic

    console = Console()
    video = asset_path(DEMO_VIDEO)
    check_outputs([video], args.out, force=True)  # the demo's own files: only a folder in the way fails
    if not video.is_file():
        raise MediaError(f"{video}: the bundled demo video is missing from this installation")
    predictor = VideoPredictor.from_checkpoint(
        args.weights, device=args.device, threshold=args.threshold, precision=args.precision
    )
    console.print(f"demo video: {video} (synthetic, 12 s, with soundtrack)", markup=False)
    console.print(f"checkpoint: {predictor.info.source}", markup=False)
    (outputs,) = predict_files(
        predictor, [video], args.out, overlay=not args.no_overlay, console=console
    )
    gt = outputs.folder / GROUND_TRUTH_FILE
    write_bytes_atomic(gt, asset_path(DEMO_ANNOTATIONS).read_bytes())
    console.print(f"ground truth: {gt}", markup=False)
    console.print(f"score it:     avis eval --gt {gt} --pred {outputs.results}", markup=False)
    return 0
