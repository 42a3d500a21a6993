"""Time one process's training step of the v2 recipe at a final-stage side (round 24).

    python prof_train.py SIDE [STEPS] [--prof]

One thread, 2 clips of 2 frames (one of the recipe's two processes), clips resized as the
final stage at SIDE px resizes them (long side at most 2 x SIDE); the mean of STEPS steps after
3 warm-up steps, split into data, forward, loss, backward and optimiser. Run from the
repository root with benchmark v2 in data/synth_v2. ``--prof`` adds a torch.profiler table.
"""

import sys
import time

import torch

from avis.data import collate_clips
from avis.engine.build import (
    build_criterion,
    build_final_stage_dataset,
    build_model,
    build_train_dataset,
    model_config,
)
from avis.engine.config import load_config
from avis.engine.optim import build_optimizer

PARTS = ("data", "fwd", "loss", "bwd", "opt")


def main() -> None:
    side = int(sys.argv[1]) if len(sys.argv) > 1 else 224
    steps = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 12
    torch.set_num_threads(1)
    overrides = ["data.root=data/synth_v2", f"data.final_short_sides=[{side}]", f"data.final_max_size={2 * side}"]
    cfg = load_config("avism_tiny", "configs/avism_tiny_v2.yaml", overrides)
    dataset, split = build_train_dataset(cfg)
    dataset = build_final_stage_dataset(cfg, dataset)
    mc = model_config(cfg, split.num_classes, split.audio_dim)
    torch.manual_seed(0)
    model = build_model(mc)
    criterion = build_criterion(cfg, mc.num_classes)
    optimizer = build_optimizer(model, cfg.optim)
    model.train()
    index = 0

    def step() -> list[float]:
        nonlocal index
        t0 = time.perf_counter()
        batch = collate_clips([dataset[index % len(dataset)], dataset[(index + 7) % len(dataset)]])
        index += 13
        t1 = time.perf_counter()
        out = model(batch.frames, batch.audio, batch.image_sizes)
        t2 = time.perf_counter()
        losses = criterion(out, batch.targets)
        t3 = time.perf_counter()
        optimizer.zero_grad()
        losses.total.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        t5 = time.perf_counter()
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]

    for _ in range(3):
        step()
    total = [0.0] * len(PARTS)
    for _ in range(steps):
        for i, seconds in enumerate(step()):
            total[i] += seconds
    per_part = {k: round(v / steps * 1000, 1) for k, v in zip(PARTS, total)}
    print("side", side, per_part, "total ms", round(sum(total) / steps * 1000, 1))
    if "--prof" in sys.argv:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=45))


if __name__ == "__main__":
    main()
