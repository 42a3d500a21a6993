"""`avis eval`: score a results JSON against AVISeg ground truth (FSLA, HOTA, track mAP).

The table explains values that look like failures but are not: mAP entries of -100 (the
official evaluator's value for "no ground-truth track of that size") are shown as n/a, and
under the official protocol a note says when its empty-mask quirk zeroes FSLA. An empty
predictions list is legal (all zeros) and gets a warning. `--out` may not be one of the
inputs, is not overwritten without --force, and is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HOTA_ROW = ("HOTA", "DetA", "DetRe", "DetPr", "AssA", "AssRe", "AssPr", "LocA")
MAP_ROW = ("AP_all", "AP_s", "AP_m", "AP_l", "AR_all")
FSLA_ROW = ("FA", "FAn", "FAs", "FAm")
NO_GT_VALUE = -100.0  # the official evaluator's AP / AR when no GT track falls in the range
# the only frame size at which the official evaluator recognises an empty predicted mask
OFFICIAL_EMPTY_SIZES = ((720, 1280), (1280, 720))


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
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.set_defaults(func=handler)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _fmt_map(value) -> str:
    return "n/a" if value == NO_GT_VALUE else _fmt(value)


def _print_tables(result, console) -> None:
    from rich.columns import Columns
    from rich.markup import escape
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
    track_map = [(k, _fmt_map(m[k])) for k in MAP_ROW] + [(k, _fmt_map(result.extra[k])) for k in ("AP50", "AP75")]
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
                table.add_row(escape(name), *(_fmt(row[c]) for c in columns))
        console.print(table)


def _nan_to_null(value):
    """NaN (an undefined metric) as null, in nested dicts."""
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def notes(result, gt) -> list[str]:
    """Lines explaining surprising values of this result (empty when there is nothing to say)."""
    lines = []
    if result.num_predictions == 0:
        lines.append("warning: the predictions list is empty: every score is 0 (legal, but "
                     "nothing was predicted)")
    if any(result.metrics[k] == NO_GT_VALUE for k in MAP_ROW):
        from avis.eval.constants import MEDIUM_MAX_AREA, SMALL_MAX_AREA

        lines.append(f"n/a: no ground-truth track in that area range (mean mask area: small < "
                     f"{SMALL_MAX_AREA}, medium < {MEDIUM_MAX_AREA} px, large above); the official "
                     "evaluator reports -100 there (kept in --out)")
    odd = [v for v in gt.videos if (v.height, v.width) not in OFFICIAL_EMPTY_SIZES]
    if result.protocol == "official" and odd and result.num_predictions:
        lines.append(
            "note: the official protocol (bit-compatible with the official evaluator) counts an "
            "empty predicted mask as an object unless it is the empty 720x1280 string, and gates "
            f"FSLA on the classes of every predicted track of a video; {len(odd)} of "
            f"{len(gt.videos)} videos here are not 720x1280, so frames where a track is silent "
            "still count it and FSLA can be 0 however good the masks are. --protocol fixed "
            "corrects this (docs/evaluation.md, differences 1 and 2)"
        )
    return lines


def handler(args: argparse.Namespace) -> int:
    from avis.io.outputs import check_input_file, check_output_file

    check_input_file(args.gt, "--gt ground-truth JSON")
    check_input_file(args.pred, "--pred results JSON")
    if args.out:
        check_output_file(args.out, force=args.force, inputs=[args.gt, args.pred])
    from rich.console import Console
    from rich.progress import Progress

    from avis.eval import evaluate
    from avis.eval.records import load_ground_truth
    from avis.io.atomic import write_json_atomic

    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating videos", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        gt = load_ground_truth(args.gt)
        result = evaluate(gt, args.pred, protocol=args.protocol, per_class=args.per_class,
                          progress=advance)
    _print_tables(result, console)
    for line in notes(result, gt):
        console.print(line, highlight=False, markup=False)
    if args.out:
        payload = {
            "protocol": result.protocol,
            "metrics": result.metrics,
            "unrounded": result.unrounded,
            "extra": result.extra,
        }
        if result.per_class is not None:
            payload["per_class"] = result.per_class
        write_json_atomic(args.out, _nan_to_null(payload), indent=1)  # JSON has no NaN
        console.print(f"metrics written to {args.out}", markup=False)
    return 0
