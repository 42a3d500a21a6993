"""`avis train`: train AVISM on an AVISeg-layout data set (single process or torchrun + DDP).

avis train --preset avism_tiny --data runs/synth --output runs/tiny
avis train --preset avism_tiny --data runs/synth --output runs/tiny --resume
avis train ... --config my.yaml optim.lr=2e-4 iterations=500 model.frame_queries=10
avis train ... processes=2 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1   # on node 0
avis train ... processes=2 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1   # on node 1
torchrun --nproc_per_node 2 -m avis.cli.main train --preset avism_tiny --data ... batch_size=4

Everything that can be checked before the training processes start is checked first (the
config, the data, the run folder, its lock, the checkpoint to resume from): a mistake gives
one message and exit code 1, and nothing is started. Ctrl-C stops every process (exit 130);
the newest checkpoint is intact (checkpoints are written atomically). See docs/training.md and
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from avis.cli import args as types

DEFAULT_RUNS = Path("runs")
DEFAULT_MASTER_PORT = 29500
LOG = logging.getLogger("avis.train")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (preset + YAML + key=value overrides; DDP under torchrun)",
        description="Train AVISM. The resolved config, metrics.jsonl, curves.png, checkpoints "
        "and model_final.pth go to the output folder. See docs/training.md.",
    )
    parser.add_argument(
        "--preset", default="avism_tiny", help="training preset (default: avism_tiny)"
    )
    parser.add_argument("--data", type=Path, help="AVISeg-layout folder (sets data.root)")
    parser.add_argument("--config", type=Path, help="YAML file of config overrides")
    parser.add_argument("--output", type=Path, help="run folder (default: runs/<preset>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint of --output"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--no-eval", action="store_true", help="skip periodic and final evaluation")
    multi = parser.add_argument_group(
        "several machines (each runs `processes` local processes; docs/training.md)"
    )
    multi.add_argument(
        "--nnodes", type=int, default=1, help="number of machines taking part (default: 1)"
    )
    multi.add_argument(
        "--node-rank", type=int, default=0,
        help="this machine's number, 0..nnodes-1; node 0 writes the run folder (default: 0)",
    )  # fmt: skip
    multi.add_argument("--master-addr", help="address of node 0 (needed with --nnodes > 1)")
    multi.add_argument(
        "--master-port", type=int, default=DEFAULT_MASTER_PORT,
        help=f"free TCP port on node 0 for the rendezvous (default: {DEFAULT_MASTER_PORT})",
    )  # fmt: skip
    # set by the launcher for its workers: the checkpoint it chose and checked
    parser.add_argument("--resume-from", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--precision",
        choices=types.PRECISION_CHOICES,
        help="training and evaluation precision (sets config 'precision'; auto: the amp "
        "setting, else fp32 on CPU and bf16 on CUDA)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=2e-4"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avis.engine.launch import TrainingInterrupted

    run_dir = args.output or DEFAULT_RUNS / args.preset
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    # Ctrl-C raises KeyboardInterrupt as usual, but it is also remembered: a library that turns
    # the interrupt into its own error (PyAV's "immediate exit requested" while decoding, say)
    # still ends the run as interrupted (exit 130), not as a failure
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        return _run(args, run_dir)
    except KeyboardInterrupt:  # one process: Ctrl-C lands here
        return _interrupted(run_dir, 130, "SIGINT")
    except TrainingInterrupted as err:  # the launcher: its workers have been stopped
        return _interrupted(run_dir, err.exit_code, str(err))
    except Exception:
        if interrupted:
            return _interrupted(run_dir, 130, "SIGINT")
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace, run_dir: Path) -> int:
    from avis.engine.config import load_config
    from avis.engine.launch import (
        PARENT_PID_ENV,
        Nodes,
        become_worker,
        launch_workers,
        worker_failure,
    )
    from avis.engine.preflight import check_batch, check_run

    worker = "WORLD_SIZE" in os.environ  # started by torchrun (ours or the user's)
    if worker:
        become_worker()
        if int(os.environ.get("RANK", "0")) != 0:  # the same INFO lines come from every rank
            logging.getLogger("avis").setLevel(logging.WARNING)
    try:
        overrides = list(args.overrides)
        if args.data is not None:
            overrides.insert(0, f"data.root={args.data}")
        if args.precision is not None:
            overrides.append(f"precision={args.precision}")
        cfg = load_config(args.preset, args.config, overrides)
        if worker:
            resume_from = args.resume_from
            if PARENT_PID_ENV not in os.environ:  # plain torchrun: no launcher checked anything
                resume_from = check_run(
                    cfg, run_dir, resume=args.resume, evaluate=_evaluates(args, cfg), data=False,
                    lock=False,
                )  # fmt: skip
            return _train(args, cfg, run_dir, resume_from)
        nodes = Nodes(
            args.nnodes, args.node_rank, args.master_addr,
            args.master_port if args.nnodes > 1 else None,
        )  # fmt: skip
        nodes.validate()
        check_batch(cfg, cfg.processes * args.nnodes)
        launching = cfg.processes > 1 or args.nnodes > 1
        resume_from = check_run(
            cfg, run_dir, resume=args.resume, evaluate=_evaluates(args, cfg), data=launching,
            lock=True, run_folder=args.node_rank == 0,
        )  # fmt: skip
        if not launching:
            return _train(args, cfg, run_dir, resume_from)
        launch_workers(
            _worker_args(args, run_dir, resume_from),
            cfg.processes,
            nodes,
            threads=cfg.threads,
            verbose=bool(getattr(args, "verbose", False)),
        )
        return 0
    except Exception as err:
        if not worker:
            raise
        return worker_failure(err, run_dir)


def _train(args: argparse.Namespace, cfg, run_dir: Path, resume_from: Path | None) -> int:
    """The training itself: this process alone, or one rank under torchrun."""
    import torch

    from avis.data import collate_clips
    from avis.engine.build import (
        build_criterion,
        build_final_stage_dataset,
        build_model,
        build_train_dataset,
        model_config,
        video_repeats,
    )
    from avis.engine.checkpoint import remove_stale_temporaries
    from avis.engine.distributed import cleanup_distributed, init_distributed
    from avis.engine.evaluation import SplitEvaluator
    from avis.engine.preflight import check_batch, check_same_start
    from avis.engine.runlock import RunLock
    from avis.engine.trainer import Trainer, training_precision

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(args.device, cfg.dist_timeout_minutes)
    lock: RunLock | None = None
    finished = False
    try:
        check_batch(cfg, info.world_size)
        dataset, split = build_train_dataset(cfg)  # reads only: a data error leaves no trace
        model_cfg = model_config(cfg, split.num_classes, split.audio_dim)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = build_model(model_cfg, cfg.init_weights)
        evaluate = None
        if _evaluates(args, cfg):
            evaluate = SplitEvaluator(
                cfg.data.root, cfg.data.eval_split, model_cfg, split.class_names,
                max_videos=cfg.data.eval_max_videos,
                precision=training_precision(cfg, info.device),
            )  # fmt: skip
        extra: dict[str, Any] = {"class_names": list(split.class_names)}
        if features := _audio_features(cfg, split):
            extra["audio_features"] = features
        if info.is_main:  # the process that writes the run folder holds its lock
            lock = RunLock(run_dir).acquire()
            remove_stale_temporaries(run_dir)
        trainer = Trainer(
            cfg,
            model,
            build_criterion(cfg, model_cfg.num_classes),
            dataset,
            collate_clips,
            run_dir,
            info,
            model_config=model_cfg.to_dict(),
            model_extra=extra,
            evaluate=evaluate,
            repeats=video_repeats(split, cfg.data.multi_instance_repeat),
            final_dataset=build_final_stage_dataset(cfg, dataset),
            final_repeats=(
                video_repeats(
                    split, cfg.data.final_multi_instance_repeat, "data.final_multi_instance_repeat"
                )
                if cfg.data.final_multi_instance_repeat
                else "same"
            ),
        )
        if (args.resume or resume_from is not None) and not trainer.resume(resume_from):
            LOG.info("no checkpoint in %s: starting from scratch", run_dir)
        check_same_start(trainer.iteration, info, run_dir)
        metrics = trainer.train()
        finished = True
        if info.is_main:
            print(f"run folder: {run_dir}")
            if metrics:
                print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    finally:
        cleanup_distributed(finished)
        if lock is not None:
            lock.release()
    return 0


def _evaluates(args: argparse.Namespace, cfg) -> bool:
    return not args.no_eval and cfg.eval_every >= 0


def _worker_args(args: argparse.Namespace, run_dir: Path, resume_from: Path | None) -> list[str]:
    """This command for the workers (the checks are done: they resume from `resume_from`)."""
    worker = ["train", "--preset", args.preset, "--output", str(run_dir), "--device", args.device]
    worker += ["--data", str(args.data)] if args.data is not None else []
    worker += ["--config", str(args.config)] if args.config is not None else []
    worker += ["--resume"] if args.resume else []  # ranks of other nodes find it themselves
    worker += ["--resume-from", str(resume_from)] if resume_from is not None else []
    worker += ["--no-eval"] if args.no_eval else []
    worker += ["--precision", args.precision] if args.precision is not None else []
    return [*worker, *args.overrides]


def _interrupted(run_dir: Path, code: int, what: str) -> int:
    from avis.engine.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    where = (
        f"the newest checkpoint is {found[-1][1]}; continue with --resume"
        if found
        else "no checkpoint was written yet"
    )
    print(f"avis train: interrupted ({what}): training stopped; {where}", file=sys.stderr)
    return code


def _audio_features(cfg, split) -> str:
    """The extractor name to store in the model: config, else the split's marker file."""
    import json

    if cfg.data.audio_features:
        return cfg.data.audio_features
    marker = split.split_dir / "FEATAudios" / "extractor.json"
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text()).get("extractor", ""))
        except (OSError, ValueError):
            return ""
    return ""
