"""`avis train`: train AVISM on an AVISeg-layout data set (single process or torchrun + DDP).

avis train --preset avism_tiny --data runs/synth --output runs/tiny
avis train --preset avism_tiny --data runs/synth --output runs/tiny --resume
torchrun --nproc_per_node 2 -m avis.cli.main train --preset avism_tiny --data ... batch_size=4
avis train ... --config my.yaml optim.lr=2e-4 iterations=500 model.frame_queries=10
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_RUNS = Path("runs")


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
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "tf32", "bf16", "fp16"),
        help="training and evaluation precision (sets config 'precision'; auto: the amp "
        "setting, else fp32 on CPU and bf16 on CUDA)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=2e-4"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from avis.engine.build import (
        build_criterion,
        build_model,
        build_train_dataset,
        model_config,
        video_repeats,
    )
    from avis.engine.checkpoint import list_checkpoints
    from avis.engine.config import load_config
    from avis.engine.distributed import cleanup_distributed, init_distributed
    from avis.engine.evaluation import SplitEvaluator
    from avis.engine.trainer import Trainer, training_precision
    from avis.errors import DataError

    overrides = list(args.overrides)
    if args.data is not None:
        overrides.insert(0, f"data.root={args.data}")
    if args.precision is not None:
        overrides.append(f"precision={args.precision}")
    cfg = load_config(args.preset, args.config, overrides)
    run_dir = args.output or DEFAULT_RUNS / args.preset
    if list_checkpoints(run_dir) and not args.resume:
        raise DataError(
            f"{run_dir} already holds checkpoints: add --resume, or give another --output"
        )
    if cfg.processes > 1 and "WORLD_SIZE" not in os.environ:
        return launch_local_processes(args, run_dir, cfg.processes, cfg.threads)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = init_distributed(args.device)
    try:
        dataset, split = build_train_dataset(cfg)
        model_cfg = model_config(cfg, split.num_classes, split.audio_dim)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = build_model(model_cfg, cfg.init_weights)
        evaluate = None
        if not args.no_eval and cfg.eval_every >= 0:
            evaluate = SplitEvaluator(
                cfg.data.root, cfg.data.eval_split, model_cfg, split.class_names,
                max_videos=cfg.data.eval_max_videos,
                precision=training_precision(cfg, info.device),
            )  # fmt: skip
        from avis.data import collate_clips

        trainer = Trainer(
            cfg,
            model,
            build_criterion(cfg, model_cfg.num_classes),
            dataset,
            collate_clips,
            run_dir,
            info,
            model_config=model_cfg.to_dict(),
            model_extra={
                "class_names": list(split.class_names),
                **(
                    {"audio_features": _audio_features(cfg, split)}
                    if _audio_features(cfg, split)
                    else {}
                ),
            },
            evaluate=evaluate,
            repeats=video_repeats(split, cfg.data.multi_instance_repeat),
        )
        if args.resume and not trainer.resume():
            logging.getLogger("avis.train").info(
                "no checkpoint in %s: starting from scratch", run_dir
            )
        metrics = trainer.train()
        if info.is_main:
            print(f"run folder: {run_dir}")
            if metrics:
                print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    finally:
        cleanup_distributed()
    return 0


def launch_local_processes(
    args: argparse.Namespace, run_dir: Path, processes: int, threads: int
) -> int:
    """Run this same command under `torchrun --standalone` with `processes` local processes."""
    train_args = [
        "train",
        "--preset",
        args.preset,
        "--output",
        str(run_dir),
        "--device",
        args.device,
    ]
    train_args += ["--data", str(args.data)] if args.data is not None else []
    train_args += ["--config", str(args.config)] if args.config is not None else []
    train_args += ["--resume"] if args.resume else []
    train_args += ["--no-eval"] if args.no_eval else []
    train_args += ["--precision", args.precision] if args.precision is not None else []
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "avis.cli.main", *train_args, *args.overrides,
    ]  # fmt: skip
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    logging.getLogger("avis.train").info("starting %d processes: %s", processes, " ".join(command))
    return subprocess.call(command, env=env)


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
