"""`avis eval`: score a results JSON against AVISeg ground truth (FSLA, HOTA, track mAP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HOTA_ROW = ("HOTA", "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA")
MAP_ROW = ("AP_all", "AP_s", "AP_m", "AP_l", "AR_all")
FSLA_ROW = ("FA", "FAn", "FAs", "FAm")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate predictions with FSLA, HOTA and track mAP",
        description="Score a results JSON (one entry per predicted track: video_id, score, "
        "category_id, one compressed RLE per frame) against an AVISeg ground-truth JSON. "
        "Prints a table and optionally writes the metrics as JSON.",
    )
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth JSON (e.g. test.json)")
    parser.add_argument("--pred", type=Path, required=True, help="results JSON (list of tracks)")
    parser.add_argument(
        "--protocol",
        choices=("official", "fixed"),
        default="official",
        help="official: bit-compatible with the official AVIS evaluator, quirks included "
        "(default); fixed: the quirks corrected (see docs/evaluation.md)",
    )
    parser.add_argument("--per-class", action="store_true", help="also report each class")
    parser.add_argument("--out", type=Path, help="write the metrics to this JSON file")
    parser.set_defaults(func=handler)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _print_tables(result, console) -> None:
    from rich.columns import Columns
    from rich.table import Table

    m = result.metrics

    def block(title: str, rows: list[tuple[str, str]]) -> Table:
        table = Table(title=title, show_header=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for row in rows:
            table.add_row(*row)
        return table

    frames = "/".join(str(m[f"FA{t}_all"]) for t in "nsm")
    fsla = [(k, _fmt(m[k])) for k in FSLA_ROW] + [("frames n/s/m", frames)]
    track_map = [(k, _fmt(m[k])) for k in MAP_ROW] + [(k, _fmt(result.extra[k])) for k in ("AP50", "AP75")]
    console.print(
        f"AVIS evaluation, {result.protocol} protocol: {result.num_videos} videos, "
        f"{result.num_predictions} predicted tracks"
    )
    console.print(Columns([
        block("FSLA", fsla),
        block("HOTA", [(k, _fmt(m[k])) for k in HOTA_ROW]),
        block("track mAP", track_map),
    ]))  # fmt: skip
    if result.per_class:
        table = Table(title="per class (classes with GT or predictions)")
        columns = ("HOTA", "DetA", "AssA", "AP", "AR", "num_gt_tracks", "num_pred_tracks")
        table.add_column("class", no_wrap=True)
        for c in columns:
            table.add_column(c.replace("num_", "#").replace("_tracks", ""), justify="right")
        for name, row in result.per_class.items():
            if row["num_gt_tracks"] or row["num_pred_tracks"]:
                table.add_row(name, *(_fmt(row[c]) for c in columns))
        console.print(table)


def handler(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from avis.eval import evaluate

    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating videos", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = evaluate(args.gt, args.pred, protocol=args.protocol, per_class=args.per_class,
                          progress=advance)
    _print_tables(result, console)
    if args.out:
        payload = {
            "protocol": result.protocol,
            "metrics": result.metrics,
            "unrounded": result.unrounded,
            "extra": result.extra,
        }
        if result.per_class is not None:
            payload["per_class"] = result.per_class
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1))
        console.print(f"metrics written to {args.out}")
    return 0
