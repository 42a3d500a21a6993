"""`avis eval-seeds`: score a checkpoint on fresh synthetic test splits, one per seed.

    avis eval-seeds --weights runs/tiny/model_final.pth --seeds 101 102 103 --out seeds.json

For each seed a synthetic test split is generated into --work-dir (reused when the same
generator version, seed, preset, size and number of videos is there), the model predicts
every video once, and the predictions are scored with and without component splitting:
FSLA / HOTA / mAP (fixed and official protocols), mAP on the videos with twins (two
same-class instances sounding together) and on the others. Prints a table per seed and the
mean and spread (max - min) across seeds; --out writes all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avis.cli import args as types

DEFAULT_SEEDS = (101, 102, 103)
DEFAULT_WORK_DIR = Path("runs/eval_seeds")
TABLES = {  # protocol -> metric keys of the report
    "fixed": ("FSLA", "HOTA", "mAP", "mAP_twins", "mAP_others"),
    "official": ("FSLA_official", "HOTA_official", "mAP_official"),
}
HEADERS = {"mAP_twins": "mAP twins", "mAP_others": "mAP others", "FSLA_official": "FSLA",
           "HOTA_official": "HOTA", "mAP_official": "mAP"}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-seeds",
        help="score a checkpoint on fresh synthetic test splits made from given seeds",
        description="Generate one synthetic test split per seed (cached in --work-dir), predict "
        "every video with the checkpoint and score it with and without component splitting; "
        "prints per-seed FSLA/HOTA/mAP (fixed and official protocols), the mAP of twin videos "
        "(two same-class instances sounding together) and of the others, and the mean and "
        "spread (max - min) across seeds.",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="avis checkpoint (default: the shipped tiny checkpoint)",
    )
    parser.add_argument(
        "--seeds",
        type=types.non_negative_int,
        nargs="+",
        default=list(DEFAULT_SEEDS),
        help="data seeds, one test split each (default: 101 102 103)",
    )
    parser.add_argument(
        "--preset", default=None,
        help="synthetic preset: easy (the benchmark v1), hard, stereo (v2) or hard_stereo; "
        "default: stereo for a model that reads where the sound is, else easy "
        "(a stereo model on a mono preset hears every sound at the centre)",
    )
    parser.add_argument(
        "--videos",
        type=types.positive_int,
        default=120,
        help="test videos per seed; n gives the first n videos of that seed's full test split (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=types.positive_int,
        default=None,
        help="frame side in pixels (default: the preset's, 128)",
    )
    parser.add_argument(
        "--min-frames",
        type=types.positive_int,
        default=None,
        help="shortest video in frames (default: the preset's, 10)",
    )
    parser.add_argument(
        "--max-frames",
        type=types.positive_int,
        default=None,
        help="longest video in frames (default: the preset's, 60)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="where the generated splits are kept and reused (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=types.positive_int,
        default=None,
        help="processes generating videos (default: CPU count)",
    )
    parser.add_argument(
        "--device", type=types.device, default="cpu", help="cpu or cuda (default: cpu)"
    )
    parser.add_argument(
        "--allow-seen-seeds",
        action="store_true",
        help="evaluate on a seed the model was trained or tuned on (warns instead of refusing)",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this JSON file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def run(args: argparse.Namespace) -> int:
    from avis.io.outputs import check_input_file, check_output_file

    inputs = []
    if args.weights is not None:
        check_input_file(args.weights, "--weights checkpoint")
        inputs.append(args.weights)
    if args.out:
        check_output_file(args.out, force=args.force, inputs=inputs, option="--out")
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from avis.engine.seeds import SETTINGS, evaluate_seeds
    from avis.inference.shipped import shipped_checkpoint
    from avis.io.atomic import write_text_atomic

    weights = args.weights if args.weights is not None else shipped_checkpoint()
    console = Console(stderr=True)

    def on_seed(result) -> None:
        line = "  ".join(f"{s}: mAP {_fmt(result.metrics[s]['mAP'])}" for s in SETTINGS)
        console.print(f"seed {result.seed}: {result.num_videos} videos ({result.num_twin_videos} with twins), "
                      f"{'reused' if result.reused else 'generated'}, {result.seconds:.0f} s; {line}")  # fmt: skip

    names = ("size", "min_frames", "max_frames")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    report = evaluate_seeds(
        weights, args.seeds, work_dir=args.work_dir, preset=args.preset, num_videos=args.videos,
        overrides=overrides, device=args.device, workers=args.workers,
        allow_seen_seeds=args.allow_seen_seeds, progress=True, on_seed=on_seed,
    )  # fmt: skip
    summary = report.summary()
    title = f"{weights} on synthetic v{report.config.version} {report.preset} test splits, {args.videos} videos per seed"
    out = Console()
    for protocol, keys in TABLES.items():
        table = Table(title=escape(f"{title}: {protocol} protocol"))
        for name in ("splitting", "seed", *(HEADERS.get(k, k) for k in keys)):
            table.add_column(name, justify="left" if name in ("splitting", "seed") else "right")
        for setting in SETTINGS:
            for result in report.results:
                table.add_row(
                    setting, str(result.seed), *(_fmt(result.metrics[setting][k]) for k in keys)
                )
            table.add_row(
                setting, "mean", *(_fmt(summary[setting][k]["mean"]) for k in keys), style="bold"
            )
            table.add_row(
                setting,
                "spread",
                *(_fmt(summary[setting][k]["spread"]) for k in keys),
                end_section=True,
            )
        out.print(table)
    if args.out:
        write_text_atomic(args.out, json.dumps(report.to_json(), indent=2) + "\n")
    return 0
