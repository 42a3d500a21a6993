"""`avis serve`: a web page to run avis on your own videos (needs `pip install -e .[web]`).

Open http://HOST:PORT/ in a browser, upload a video with its soundtrack (or pick the bundled
demo clip), and get the overlay video, the timeline, a table of the sounding instances and
the results.json / summary.json / overlay.mp4 downloads. Jobs run one at a time by default
(--max-jobs), up to --max-waiting more wait in line; uploads and results live in a temporary
folder that is deleted --keep-minutes after a job ends and when the server stops. The page
loads nothing from the internet. It is meant for a trusted network: there are no accounts;
anyone who can reach the port can run jobs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avis.cli import args as types

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def register(subparsers: argparse._SubParsersAction) -> None:
    from avis.serve.jobs import Limits, MemoryBudget  # light: no torch, no web framework

    limits, budget = Limits(), MemoryBudget()
    parser = subparsers.add_parser(
        "serve",
        help="a web page to run avis on uploaded videos (needs the 'web' extra)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped tiny one)")
    parser.add_argument("--preset", help="model preset (needed for official AVISM checkpoints)")
    parser.add_argument("--vggish-weights", type=Path, help="VGGish weights for official models")
    parser.add_argument(
        "--device", default="cpu", type=types.device,
        help="default torch device (cpu, cuda, cuda:0, ...)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=types.PRECISION_CHOICES, default="auto",
        help="default numeric precision of jobs; the page offers the modes each device supports "
        "(default: auto = fp32 on CPU, bf16 on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--max-jobs", type=int, default=limits.max_jobs,
        help=f"videos processed at the same time (default: {limits.max_jobs}); memory grows with it",
    )  # fmt: skip
    parser.add_argument(
        "--max-waiting", type=int, default=limits.max_waiting,
        help=f"videos that may wait for a free slot (default: {limits.max_waiting}); more are refused",
    )  # fmt: skip
    parser.add_argument(
        "--max-upload-mb", type=float, default=limits.max_upload_mb,
        help=f"largest upload in MB (default: {limits.max_upload_mb:g})",
    )  # fmt: skip
    parser.add_argument(
        "--max-duration", type=float, default=limits.max_duration_s,
        help=f"longest video in seconds (default: {limits.max_duration_s:g})",
    )  # fmt: skip
    parser.add_argument(
        "--keep-minutes", type=float, default=limits.keep_minutes,
        help=f"minutes a finished job's files are kept (default: {limits.keep_minutes:g})",
    )  # fmt: skip
    parser.add_argument(
        "--feature-budget-mb", type=float, default=budget.feature_budget_mb,
        help="per job: mask features kept in RAM before the memory-bounded path is taken "
        f"(default: {budget.feature_budget_mb:g})",
    )  # fmt: skip
    parser.add_argument(
        "--temp-dir", type=Path, help="where job folders are made (default: the system temp folder)"
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from avis.errors import AvisError

    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise AvisError(
            f"avis serve needs the 'web' extra ({err.name} is missing): pip install -e '.[web]'"
        ) from None
    from avis.inference.predictor import VideoPredictor
    from avis.precision import supported_precisions
    from avis.serve.app import create_app
    from avis.serve.jobs import Limits, MemoryBudget

    try:
        limits = Limits(
            max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration,
            max_jobs=args.max_jobs, max_waiting=args.max_waiting, keep_minutes=args.keep_minutes,
        )  # fmt: skip
    except ValueError as err:
        raise AvisError(str(err)) from None
    offered = supported_precisions(args.device)
    if args.precision != "auto" and args.precision not in offered:
        raise AvisError(
            f"--precision {args.precision} is not offered on {args.device} "
            f"(choose auto, {', '.join(offered)})"
        )
    predictor = VideoPredictor.from_checkpoint(
        args.weights, preset=args.preset, device=args.device, vggish_weights=args.vggish_weights,
        precision=args.precision,
    )  # fmt: skip
    budget = MemoryBudget(feature_budget_mb=args.feature_budget_mb)
    app, manager = create_app(predictor, limits, budget, args.temp_dir, args.precision)
    print(f"avis serve: open http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        manager.close()
    return 0
