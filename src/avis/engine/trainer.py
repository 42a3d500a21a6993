"""The training loop: plain and readable.

Per optimiser step: `accumulation` micro-batches (forward under optional autocast, loss
outside the model, backward; DDP gradient sync only on the last one), full-model gradient
clipping, AdamW step, schedule step. Every `log_every` steps the mean loss terms (averaged
over processes) go to `metrics.jsonl` and the progress bar; every `checkpoint_every` steps
and at the end a checkpoint is written atomically; every `eval_every` steps (and at the end)
the `evaluate` callable scores the model. Only rank 0 writes files.

Components come in from the caller: the model, the criterion, the training dataset with its
collate function and the evaluation callable; nothing is built from strings here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from avis.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    capture_rng_state,
    checkpoint_path,
    load_training_checkpoint,
    newest_intact_checkpoint,
    prune_checkpoints,
    restore_rng_state,
)
from avis.engine.config import TrainConfig, save_config
from avis.engine.data import make_train_loader
from avis.engine.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    max_over_processes,
    mean_over_processes,
)
from avis.engine.ema import WeightAverage
from avis.engine.metrics import LOG, MetricsWriter, read_metrics
from avis.engine.optim import build_optimizer, build_scheduler, clip_gradients
from avis.engine.plot import plot_curves
from avis.engine.progress import ProgressBar, format_record
from avis.errors import CheckpointError
from avis.io.atomic import save_torch_atomic
from avis.precision import default_precision, precision_context, tf32_allowed

CURVES_FILE = "curves.png"
CONFIG_FILE = "config.yaml"
FINAL_MODEL_FILE = "model_final.pth"
TRAIN_SEED_STRIDE = 1000  # per-rank training RNG seed = seed + 1 + stride * rank

Evaluate = Callable[[nn.Module], dict[str, float]]


def training_precision(cfg: TrainConfig, device: torch.device) -> str:
    """`cfg.precision`, or for "auto" the `amp` setting when given, else the device's default."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.amp != "none":
        return cfg.amp
    return default_precision(device)


class StopTraining(Exception):
    """Raised by `Trainer.train(stop_after=...)` to imitate a killed run (tests)."""


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        criterion: Callable[[Any, list], Any],
        train_dataset: Any,
        collate: Callable[[list], Any],
        run_dir: Path,
        info: DistInfo,
        *,
        model_config: dict[str, Any],
        model_extra: dict[str, Any] | None = None,
        evaluate: Evaluate | None = None,
        find_unused_parameters: bool = False,
        repeats: list[int] | None = None,  # per-video repeat factors of the clip order
        final_dataset: Any | None = None,  # clips of the final stage (`data.final_from`)
        # the final stage's factors ("same" = `repeats`, None = every video once per pass)
        final_repeats: list[int] | None | Literal["same"] = "same",
    ) -> None:
        self.cfg, self.criterion, self.info = cfg, criterion, info
        self.repeats, self.final_dataset = repeats, final_dataset
        self.final_repeats = repeats if isinstance(final_repeats, str) else final_repeats
        if (cfg.data.final_from > 0) != (final_dataset is not None):
            raise ValueError("data.final_from > 0 needs a final_dataset, and only then")
        self.train_dataset, self.collate = train_dataset, collate
        self.run_dir, self.model_config, self.evaluate = Path(run_dir), model_config, evaluate
        self.model_extra = dict(model_extra or {})  # e.g. class_names, audio_features
        self.model = model.to(info.device)
        self.module = self.model  # the unwrapped model (what checkpoints hold)
        if info.enabled:
            self.model = DistributedDataParallel(
                self.module,
                device_ids=[info.device.index] if info.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
            )
        self.optimizer = build_optimizer(self.module, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim)
        self.precision = training_precision(cfg, info.device)
        use_scaler = self.precision == "fp16" and info.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.iteration = 0  # optimiser steps done
        # the weight average (`ema_decay`), kept by the main process, which alone evaluates
        # and writes files
        self.weight_average = (
            WeightAverage(cfg.ema_decay, cfg.ema_from)
            if cfg.ema_decay > 0 and info.is_main
            else None
        )
        # training-loop seconds so far, earlier segments of a resumed run included (updated
        # every step; saved in checkpoints for the time budget)
        self.elapsed_before = 0.0
        self.clock: Callable[[], float] = time.perf_counter  # tests may replace it
        torch.manual_seed(cfg.seed + 1 + TRAIN_SEED_STRIDE * info.rank)
        self.writer: MetricsWriter | None = None
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / CONFIG_FILE)
            self.writer = MetricsWriter(self.run_dir, cfg.tensorboard)

    # ----------------------------------------------------------------- checkpoints
    def averaged(self):
        """The weight average in the model for the duration (a no-op without one)."""
        if self.weight_average is None:
            return nullcontext()
        return self.weight_average.applied(self.module)

    def model_payload(self) -> dict[str, Any]:
        """The avis model checkpoint fields (what `avis.models.checkpoint.load_model` reads)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.model_config,
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            **self.model_extra,
        }

    def state_dict(self, rng_states: list[dict]) -> dict[str, Any]:
        return {
            **self.model_payload(),
            "train_config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
            "world_size": self.info.world_size,
            "elapsed_seconds": self.elapsed_before,
            "ema": self.weight_average.state_dict() if self.weight_average is not None else None,
        }

    def save_checkpoint(self) -> None:
        rng_states = all_gather_objects(capture_rng_state(), self.info)  # collective
        if self.info.is_main:
            save_torch_atomic(
                self.state_dict(rng_states), checkpoint_path(self.run_dir, self.iteration)
            )
            prune_checkpoints(self.run_dir, self.cfg.keep_last)
            self.plot()
        barrier(self.info)

    def resume(self, path: Path | None = None) -> bool:
        """Restore `path`, else the newest intact checkpoint of the run folder (a damaged
        newer one is skipped with a warning); False if there is none."""
        if path is None:
            found = newest_intact_checkpoint(self.run_dir)
            if found is None:
                return False
            path, data = found
        else:
            data = load_training_checkpoint(path)
        try:
            self.module.load_state_dict(data["model"], strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: weights do not fit the model: {err}") from err
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        if self.weight_average is not None:
            try:
                self.weight_average.load_state_dict(data.get("ema"), self.module)
            except KeyError as err:
                raise CheckpointError(f"{path}: {err}") from err
        if self.scaler is not None and data.get("scaler"):
            self.scaler.load_state_dict(data["scaler"])
        rng = data.get("rng") or []
        if data.get("world_size") == self.info.world_size and len(rng) == self.info.world_size:
            restore_rng_state(rng[self.info.rank])
        else:
            LOG.warning("%s: saved with another number of processes; random states re-seeded", path)
            torch.manual_seed(
                self.cfg.seed + 1 + TRAIN_SEED_STRIDE * self.info.rank + data["iteration"]
            )
        self.iteration = int(data["iteration"])
        self.elapsed_before = float(data.get("elapsed_seconds", 0.0))
        if self.cfg.max_minutes > 0:  # decay steps (final stage) the time budget moved earlier
            self.cfg.optim.decay_steps[:] = data["train_config"]["optim"]["decay_steps"]
            if self.cfg.data.final_from > 0:
                self.cfg.data.final_from = data["train_config"]["data"]["final_from"]
            self.cfg.ema_from = data["train_config"].get("ema_from", self.cfg.ema_from)
        if self.writer is not None:
            self.writer.truncate_after(self.iteration)
        LOG.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # ----------------------------------------------------------------- training
    def autocast(self):
        """The training precision's context (autocast dtype and TF32 switches)."""
        return precision_context(self.precision, self.info.device)

    def train_step(self, batches) -> dict[str, float]:
        """One optimiser step over `accumulation` micro-batches; returns the mean loss terms."""
        self.optimizer.zero_grad(set_to_none=True)
        with tf32_allowed(self.precision != "fp32"):  # backward and losses too
            sums = self._micro_batches(batches)
        return self._optimizer_step(sums)

    def _micro_batches(self, batches) -> dict[str, float]:
        """Forward (under the precision's autocast) and backward of `accumulation` micro-batches."""
        cfg = self.cfg
        sums: dict[str, float] = {}
        for micro in range(cfg.accumulation):
            batch = next(batches).to(self.info.device, non_blocking=self.info.device.type == "cuda")
            last = micro == cfg.accumulation - 1
            model = self.model  # DDP-wrapped when distributed
            sync = (
                model.no_sync()
                if isinstance(model, DistributedDataParallel) and not last
                else nullcontext()
            )
            with sync:
                pilots = None  # models with mask_pilots: made by the criterion from the targets
                make_pilots = getattr(self.criterion, "pilot_queries", None)
                if make_pilots is not None and getattr(self.module, "mask_pilots", False):
                    grid = (batch.frames.shape[-2] // 4, batch.frames.shape[-1] // 4)  # stride 4
                    pilots = make_pilots(batch.targets, grid)
                inputs = (batch.frames, batch.audio, batch.image_sizes)
                with self.autocast():
                    outputs = self.model(*inputs) if pilots is None else self.model(*inputs, pilots)
                result = self.criterion(outputs, batch.targets)
                loss = result.total / cfg.accumulation
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for name, value in {"loss": result.total, **result.terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / cfg.accumulation
        return sums

    def _optimizer_step(self, sums: dict[str, float]) -> dict[str, float]:
        """Gradient clipping, the (scaled) optimiser step and the schedule step."""
        cfg = self.cfg
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = cfg.optim.clip_grad_norm if cfg.optim.clip_grad_norm > 0 else math.inf
        grad_norm = clip_gradients(self.module, max_norm)
        if not math.isfinite(grad_norm) and self.scaler is None:
            raise FloatingPointError(
                f"iteration {self.iteration}: gradient norm is {grad_norm} (loss {sums.get('loss')})"
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        if self.weight_average is not None:
            self.weight_average.update(self.module, self.iteration)
        sums["grad_norm"] = grad_norm
        return sums

    def train(self, stop_after: int | None = None) -> dict[str, float]:
        """Run from `self.iteration` to `cfg.iterations`; returns the last evaluation metrics."""
        cfg = self.cfg
        self.model.train()
        dataset = self.stage_dataset()
        batches = self.batches(dataset)
        window: dict[str, float] = {}
        window_steps, window_start, window_cpu = 0, time.perf_counter(), time.process_time()
        start_iteration, start_time = self.iteration, time.perf_counter()
        loop_start, elapsed_start = self.clock(), self.elapsed_before
        last_eval: dict[str, float] = {}
        progress = ProgressBar(cfg.iterations, self.iteration) if self.info.is_main else None
        spent = cfg.max_minutes > 0 and self.elapsed_before >= cfg.max_minutes * 60
        if spent:
            LOG.info("the time budget of %.1f min was already spent", cfg.max_minutes)
        try:
            while self.iteration < cfg.iterations and not spent:
                terms = self.train_step(batches)
                for name, value in terms.items():
                    window[name] = window.get(name, 0.0) + value
                window_steps += 1
                self.elapsed_before = elapsed_start + self.clock() - loop_start
                out_of_time = self.check_time_budget()
                done = self.iteration == cfg.iterations or out_of_time
                if not done and (stage := self.stage_dataset()) is not dataset:  # final stage
                    dataset, batches = stage, self.batches(stage)
                    if self.info.is_main:
                        LOG.info("final stage from iteration %d: short sides %s",
                                 self.iteration, cfg.data.final_short_sides)  # fmt: skip
                if self.iteration % cfg.log_every == 0 or done:
                    now = time.perf_counter()
                    means = mean_over_processes(
                        {k: v / window_steps for k, v in window.items()}, self.info
                    )
                    seconds_per_iter = (now - window_start) / window_steps
                    rate = (self.iteration - start_iteration) / max(now - start_time, 1e-9)
                    record = {
                        "kind": "train",
                        "iteration": self.iteration,
                        **means,
                        "lr": self.optimizer.param_groups[0]["lr"]
                        / self.optimizer.param_groups[0]["lr_mult"],
                        "seconds_per_iter": seconds_per_iter,
                        "cpu_seconds_per_iter": (time.process_time() - window_cpu) / window_steps,
                        "eta_seconds": self.eta_seconds(rate),
                    }
                    self.log(record, progress)
                    window, window_steps, window_start = {}, 0, now
                    window_cpu = time.process_time()
                elif progress is not None:
                    progress.advance(self.iteration, None)
                if self.iteration % cfg.checkpoint_every == 0 or done:
                    self.save_checkpoint()
                if self.should_evaluate(done):
                    last_eval = self.run_evaluation()
                if stop_after is not None and self.iteration >= stop_after and not done:
                    raise StopTraining(f"stopped after iteration {self.iteration}")
                if done:
                    break
            self.finish()
        finally:
            if progress is not None:
                progress.close()
            if self.writer is not None:
                self.writer.close()
        return last_eval

    def stage_dataset(self) -> Any:
        """The clips of the next optimiser step: the final stage's from `data.final_from` on."""
        final_from = self.cfg.data.final_from
        if self.final_dataset is not None and 0 < final_from <= self.iteration:
            return self.final_dataset
        return self.train_dataset

    def batches(self, dataset: Any) -> Iterator[Any]:
        """This process's micro-batches of `dataset` from the current step to the last one
        (the clip order depends on the step alone, so a new loader continues it exactly)."""
        cfg = self.cfg
        loader = make_train_loader(
            dataset,
            self.collate,
            seed=cfg.seed,
            start_step=self.iteration,
            num_steps=cfg.iterations,
            global_batch=cfg.batch_size,
            accumulation=cfg.accumulation,
            info=self.info,
            num_workers=cfg.data.num_workers,
            repeats=self.final_repeats if dataset is self.final_dataset else self.repeats,
            pin_memory=self.info.device.type == "cuda",
        )
        return iter(loader)

    def check_time_budget(self) -> bool:
        """Apply `max_minutes`; True when the budget is spent (the run then ends here).

        The elapsed time is the largest over processes, so every process takes the same
        decisions. A decay step d that has not happened yet is moved to the next iteration
        once the elapsed fraction of the budget reaches d / iterations, and so is the start
        of the final stage (`data.final_from`) and of the weight average (`ema_from`, which
        then starts from the weights of the current step): a run on a slow machine keeps the
        shape of its schedule. The moved steps are written to the config of later checkpoints
        and logged, so `iterations=N optim.decay_steps=[...] data.final_from=F ema_from=E`
        repeats such a run exactly."""
        cfg = self.cfg
        if cfg.max_minutes <= 0:
            return False
        self.elapsed_before = max_over_processes(self.elapsed_before, self.info)
        fraction = self.elapsed_before / (cfg.max_minutes * 60)
        steps = cfg.optim.decay_steps
        for k, step in enumerate(steps):
            if step > self.iteration + 1 and fraction >= step / cfg.iterations:
                steps[k] = self.iteration + 1  # the next optimiser step is the first decayed one
                if self.info.is_main:
                    LOG.info(
                        "time budget: %.0f %% spent at iteration %d; learning-rate decay %d "
                        "moved from iteration %d to %d",
                        100 * fraction, self.iteration, k + 1, step, steps[k],
                    )  # fmt: skip
        if cfg.ema_decay > 0 and cfg.ema_from > self.iteration and fraction >= cfg.ema_from / cfg.iterations:
            if self.info.is_main:
                LOG.info(
                    "time budget: %.0f %% spent at iteration %d; weight average moved from "
                    "iteration %d to %d", 100 * fraction, self.iteration, cfg.ema_from,
                    self.iteration,
                )  # fmt: skip
            cfg.ema_from = self.iteration  # the average starts from the weights of this step
            if self.weight_average is not None:
                self.weight_average.start = cfg.ema_from
                self.weight_average.update(self.module, self.iteration)
        final_from = cfg.data.final_from
        if final_from > self.iteration and fraction >= final_from / cfg.iterations:
            cfg.data.final_from = self.iteration  # the next optimiser step is the first one
            if self.info.is_main:
                LOG.info(
                    "time budget: %.0f %% spent at iteration %d; final stage moved from "
                    "iteration %d to %d", 100 * fraction, self.iteration, final_from,
                    self.iteration,
                )  # fmt: skip
        if fraction < 1 or self.iteration >= cfg.iterations:
            return False
        if self.writer is not None:  # the main process
            ema = f" ema_from={cfg.ema_from}" if cfg.ema_decay > 0 else ""
            LOG.info(
                "time budget of %.1f min spent: stopping at iteration %d of %d (to repeat this "
                "run exactly: iterations=%d 'optim.decay_steps=%s' data.final_from=%d%s "
                "max_minutes=0)", cfg.max_minutes, self.iteration, cfg.iterations,
                self.iteration, sorted(steps), cfg.data.final_from, ema,
            )  # fmt: skip
            self.writer.write(
                {"kind": "budget", "iteration": self.iteration,
                 "elapsed_seconds": self.elapsed_before, "decay_steps": sorted(steps),
                 "final_from": cfg.data.final_from, "ema_from": cfg.ema_from}
            )  # fmt: skip
        return True

    def eta_seconds(self, rate: float) -> float:
        by_iterations = (self.cfg.iterations - self.iteration) / max(rate, 1e-9)
        if self.cfg.max_minutes <= 0:
            return by_iterations
        return min(by_iterations, max(self.cfg.max_minutes * 60 - self.elapsed_before, 0.0))

    def should_evaluate(self, done: bool) -> bool:
        if self.evaluate is None or self.cfg.eval_every < 0:
            return False
        return done or (self.cfg.eval_every > 0 and self.iteration % self.cfg.eval_every == 0)

    def run_evaluation(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.info.is_main and self.evaluate is not None:
            self.module.eval()
            with torch.no_grad(), self.averaged():
                metrics = self.evaluate(self.module)
            self.module.train()
            record = {"kind": "eval", "iteration": self.iteration, **metrics}
            self.log(record, None)
        barrier(self.info)
        return metrics

    def log(self, record: dict[str, Any], progress: ProgressBar | None) -> None:
        if self.writer is None:
            return
        self.writer.write(record)
        if record["kind"] == "eval":
            self.plot()
        if progress is not None:
            progress.advance(self.iteration, record)
        if record["kind"] == "eval" or progress is None or not progress.live:
            LOG.info(format_record(record))

    def plot(self) -> None:
        plot_curves(read_metrics(self.run_dir), self.run_dir / CURVES_FILE)

    def finish(self) -> None:
        """Write the model-only final checkpoint (avis format) on the main process: the weight
        average when the run keeps one."""
        if self.info.is_main:
            with self.averaged():  # the payload holds the module's own tensors: save inside
                save_torch_atomic(self.model_payload(), self.run_dir / FINAL_MODEL_FILE)
        barrier(self.info)
