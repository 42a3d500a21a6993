"""`avis data check` and `avis data stats`: validate and describe an AVISeg-layout data set."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

SPLIT_NAMES = ("train", "val", "test")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check or describe an AVISeg-layout data set",
                                   description="Check or describe a data set in the AVISeg layout.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate annotations, frames, masks and audio features",
                           description="Validate a split: annotation fields, frame files and sizes, "
                           "masks, boxes/areas, audio features. Exit code 1 if anything is wrong.")
    check.add_argument("--root", type=Path, required=True, help="data set root (holds <split>.json)")
    check.add_argument("--split", default=None, help="split to check (default: every split found)")
    check.add_argument("--audio-policy", choices=("pad", "trim", "error"), default="pad",
                       help="what a feature/frame count mismatch means (default %(default)s)")
    check.add_argument("--skip-frames", action="store_true", help="do not open every frame")
    check.set_defaults(func=run_check)
    stats = sub.add_parser("stats", help="print videos, frames, instances per class, sounding fractions",
                           description="Print statistics of the annotation files as a table.")
    stats.add_argument("--root", type=Path, required=True, help="data set root (holds <split>.json)")
    stats.add_argument("--split", default=None, help="split (default: every split found)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    stats.set_defaults(func=run_stats)


def _splits(root: Path, split: str | None) -> list[str]:
    from avis.data.paths import check_split_name
    from avis.errors import DataError

    if not root.is_dir():
        raise DataError(f"{root}: --root must be a data set folder (holding <split>.json)")
    if split is not None:
        return [check_split_name(split)]
    found = [s for s in SPLIT_NAMES if (root / f"{s}.json").is_file()]
    if not found:
        raise DataError(f"{root}: no {', '.join(s + '.json' for s in SPLIT_NAMES)} found")
    return found


def run_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    from avis.data.check import check_split, summarize

    console = Console()
    failed = False
    for split in _splits(args.root, args.split):
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(escape(f"checking {split}"), total=None)
            report = check_split(args.root, split, audio_policy=args.audio_policy,
                                 read_frames=not args.skip_frames, on_video=partial(bar.advance, task))
        for line in summarize(report.errors):
            console.print(f"[red]error[/red] {escape(line)}", markup=True, highlight=False)
        for line in summarize(report.warnings):
            console.print(f"[yellow]warning[/yellow] {escape(line)}", markup=True, highlight=False)
        state = "[green]OK[/green]" if report.ok else "[red]FAILED[/red]"
        console.print(f"{escape(split)}: {state} — {report.videos} videos, {report.frames} frames, {report.masks} masks, "
                      f"{len(report.errors)} errors, {len(report.warnings)} warnings")
        failed |= not report.ok
    return 1 if failed else 0


def run_stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from avis.data.annotations import read_annotations
    from avis.data.stats import annotation_stats

    results = {split: annotation_stats(read_annotations(args.root / f"{split}.json")) for split in _splits(args.root, args.split)}
    if args.json:
        print(json.dumps({s: r.to_dict() for s, r in results.items()}, indent=2))
        return 0
    console = Console()
    overview = Table(title=escape(str(args.root)))
    for col in ("split", "videos", "frames", "len", "tracks", "masks", "sound", "silent", "multi"):
        overview.add_column(col, justify="right")
    for split, r in results.items():
        overview.add_row(split, str(r.videos), str(r.frames), f"{r.min_length}-{r.max_length}", str(r.tracks), str(r.masks),
                         f"{r.sounding_fraction:.1%}", f"{r.silent_fraction:.1%}", f"{r.multi_source_fraction:.1%}")
    console.print(overview)
    per_class = Table(title="instance tracks / sounding masks per class")
    per_class.add_column("class")
    for split in results:
        per_class.add_column(f"{split} tracks", justify="right")
        per_class.add_column(f"{split} masks", justify="right")
    first = next(iter(results.values()))
    for cid, cls in first.per_class.items():
        row = [escape(cls.name)]
        for r in results.values():
            c = r.per_class.get(cid)
            row += [str(c.tracks), str(c.masks)] if c else ["-", "-"]
        per_class.add_row(*row)
    console.print(per_class)
    console.print("sound / silent / multi = fraction of frames with >= 1 / no / >= 2 sounding instances")
    return 0
