"""`avis synth`: generate the synthetic audio-visual benchmark in the AVISeg layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from avis.cli import args as types
from avis.errors import AvisError

DEFAULT_SEED = 0  # = avis.data.synth.config.DEFAULT_SEED (not imported: the package loads numpy)
MIN_SIZE = 32
MAX_SIZE = 4096  # frame side: beyond it one video needs gigabytes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic audio-visual benchmark (AVISeg layout)",
        description="Generate a synthetic audio-visual instance segmentation data set in the "
        "AVISeg layout (JPEG frames at 1 fps, WAV soundtracks, audio features, polygon ground "
        "truth). Deterministic: the same seed gives byte-identical files. --out must be new or "
        "empty, or hold an earlier synthetic data set, which --force replaces as a whole; the "
        "new set appears there only once complete.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (the data set root)")
    parser.add_argument("--force", action="store_true", help="replace an earlier synthetic data set in --out")
    parser.add_argument("--seed", type=types.non_negative_int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    parser.add_argument("--num-train", type=types.non_negative_int, default=600, help="training videos (default %(default)s)")
    parser.add_argument("--num-val", type=types.non_negative_int, default=60, help="validation videos (default %(default)s)")
    parser.add_argument("--num-test", type=types.non_negative_int, default=120, help="test videos (default %(default)s)")
    parser.add_argument("--size", type=types.positive_int, default=None, help="frame side in pixels (default 128)")
    parser.add_argument("--min-frames", type=types.positive_int, default=None, help="shortest video in frames (default 10)")
    parser.add_argument("--max-frames", type=types.positive_int, default=None, help="longest video in frames (default 60)")
    parser.add_argument("--preset", default="easy", help="preset: easy (default, benchmark v1), hard, stereo (benchmark v2: stereo, one source per instance) or hard_stereo")
    parser.add_argument("--mp4", action="store_true", help="also write <split>/MP4/<video>.mp4 with the soundtrack")
    parser.add_argument("--mp4-fps", type=types.positive_int, default=4, help="frame rate of the mp4 files (default %(default)s)")
    parser.add_argument("--no-wav", action="store_true", help="skip the WAV soundtracks (~32 kB per video second)")
    parser.add_argument("--workers", type=types.positive_int, default=None, help="worker processes (default: CPU count)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from avis.data.synth import preset

    overrides = {k: v for k, v in (("size", args.size), ("min_frames", args.min_frames), ("max_frames", args.max_frames)) if v is not None}
    try:
        config = preset(args.preset, **overrides)
    except ValueError as err:
        raise AvisError(str(err)) from None
    counts = {"train": args.num_train, "val": args.num_val, "test": args.num_test}
    if min(counts.values()) < 0 or config.min_frames < 1 or config.max_frames < config.min_frames or not MIN_SIZE <= config.size <= MAX_SIZE:
        raise AvisError(f"need counts >= 0, 1 <= --min-frames <= --max-frames, {MIN_SIZE} <= --size <= {MAX_SIZE}")
    counts = {k: v for k, v in counts.items() if v > 0}
    if not counts:
        raise AvisError("nothing to generate: --num-train, --num-val and --num-test are all 0")
    from avis.data.synth import generate_dataset
    from avis.data.synth.target import check_target, staged_folder
    from avis.io.outputs import check_writable_dir

    check_target(args.out, args.force)
    check_writable_dir(args.out.absolute().parent, "folder of --out")
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("videos", total=sum(counts.values()))
        with staged_folder(args.out) as stage:  # complete, or the old --out stays as it was
            written = generate_dataset(
                stage, seed=args.seed, counts=counts, config=config, workers=args.workers,
                mp4_fps=args.mp4_fps if args.mp4 else None, wav=not args.no_wav, on_video=lambda: bar.advance(task),
            )  # fmt: skip
    elapsed = time.perf_counter() - start
    summary = ", ".join(f"{n} {split}" for split, n in written.items())
    console.print(f"wrote {summary} videos to {escape(str(args.out))} in {elapsed:.1f} s (seed {args.seed})")
    return 0
