"""`avis ablate-audio`: does the model use the audio? Score it with real and shuffled audio.

    avis ablate-audio --weights runs/tiny/model_final.pth --data runs/synth --split test

Runs whole-video inference on every video of the split twice (or more): with each video's
own audio features, and with the features of another video of the split (a fixed
derangement, tiled or cut to the length). Prints FSLA / HOTA / mAP under both evaluation
protocols and the drop; `--json` also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avis.cli import args as types


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate-audio",
        help="score a model with real vs shuffled audio features (does it use the audio?)",
        description="Whole-video inference on a split with the real audio features and with "
        "features shuffled across videos; prints FSLA/HOTA/mAP (fixed and official protocols).",
    )
    parser.add_argument("--weights", type=Path, required=True, help="avis checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="AVISeg-layout folder")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument(
        "--modes",
        default="real,shuffled",
        help="comma-separated audio modes: real, shuffled, zeros",
    )
    parser.add_argument("--max-videos", type=types.non_negative_int, default=0, help="first N videos by id (0 = all)")
    parser.add_argument("--device", type=types.device, default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avis.io.outputs import check_input_file, check_output_file

    check_input_file(args.weights, "--weights checkpoint")
    if args.json:
        check_output_file(args.json, force=args.force, inputs=[args.weights], option="--json")
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from avis.data import load_split
    from avis.engine.evaluation import AUDIO_MODES, SplitEvaluator
    from avis.errors import DataError
    from avis.io.atomic import write_text_atomic
    from avis.models.checkpoint import load_model, read_checkpoint
    from avis.runtime import torch_device

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in AUDIO_MODES]
    if bad or not modes:
        raise DataError(f"--modes: expected some of {AUDIO_MODES}, got {args.modes!r}")
    model, cfg = load_model(args.weights)
    model = model.to(torch_device(args.device))
    names = read_checkpoint(args.weights).get("class_names")
    names = names or load_split(args.data, args.split).class_names
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        evaluator = SplitEvaluator(
            args.data,
            args.split,
            cfg,
            list(names),
            max_videos=args.max_videos,
            audio=mode,
            progress=True,
        )
        results[mode] = evaluator(model)
    table = Table(title=escape(f"{args.weights} on {args.data}/{args.split}"))
    table.add_column("audio")
    keys = list(next(iter(results.values())))
    for key in keys:
        table.add_column(key, justify="right")
    for mode, metrics in results.items():
        table.add_row(mode, *(f"{metrics[k]:.2f}" for k in keys))
    if "real" in results:
        for mode in (m for m in modes if m != "real"):
            drop = {k: results["real"][k] - results[mode][k] for k in keys}
            results[f"drop_{mode}"] = drop
            table.add_row(f"drop ({mode})", *(f"{drop[k]:.2f}" for k in keys))
    Console().print(table)
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
    return 0
