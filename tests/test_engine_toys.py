"""A stand-in AVISM-shaped model and a toy clip dataset for the engine tests.

Also a torchrun entry point (`python -m torch.distributed.run ... tests/test_engine_toys.py`)
used by the DDP test. The toy task: each clip shows coloured squares (one per instance); the
audio vector says which classes sound; the model must segment, classify and track them.

Letters: B clips, T frames, fQ / cQ frame / video queries, C hidden, K classes, Hm x Wm grid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avis.data.dataset import ClipSample, collate_clips
from avis.engine.config import DataConfig, LossConfig, OptimConfig, TrainConfig
from avis.engine.distributed import cleanup_distributed, init_distributed
from avis.engine.trainer import Trainer
from avis.losses import AVISMCriterion, LossWeights
from avis.models.outputs import AVISMOutput, FrameOutput, VideoOutput

K, FQ, CQ, HIDDEN, AUDIO_DIM = 3, 6, 4, 16, 8
SIZE = 32
STRIDE = 4
FRAME_LAYERS, VIDEO_LAYERS, LAST_LAYERS = 2, 2, 2


class ToyAVISM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, HIDDEN, 3, padding=1), nn.GroupNorm(4, HIDDEN), nn.ReLU()
        )
        self.audio_proj = nn.Linear(AUDIO_DIM, HIDDEN)
        self.query_feat = nn.Embedding(FQ, HIDDEN)
        self.frame_layers = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(FRAME_LAYERS))
        self.norm = nn.LayerNorm(HIDDEN)
        self.class_embed = nn.Linear(HIDDEN, K + 1)
        self.mask_embed = nn.Linear(HIDDEN, HIDDEN)
        self.video_query = nn.Embedding(CQ, HIDDEN)
        self.video_layers = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(VIDEO_LAYERS))
        self.video_class = nn.Linear(HIDDEN, K + 1)
        self.video_mask = nn.Linear(HIDDEN, HIDDEN)
        self.sim_frame = nn.Linear(HIDDEN, HIDDEN)
        self.sim_clip = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, frames, audio, image_sizes) -> AVISMOutput:
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1) / 255.0  # (BT, 3, H, W)
        feats = F.avg_pool2d(self.backbone(x), STRIDE)  # (BT, C, Hm, Wm)
        pooled = feats.mean((2, 3))  # (BT, C)
        q = self.query_feat.weight[None] + (self.audio_proj(audio.flatten(0, 1)) + pooled)[:, None]
        logits, masks, queries = [], [], []
        for layer in self.frame_layers:
            q = q + torch.tanh(layer(q))
            qn = self.norm(q)  # (BT, fQ, C)
            queries.append(qn)
            logits.append(self.class_embed(qn))
            masks.append(torch.einsum("nqc,nchw->nqhw", self.mask_embed(qn), feats))
        fq = torch.stack(queries[-LAST_LAYERS:])  # (Lf, BT, fQ, C)
        fq_clip = fq.reshape(LAST_LAYERS, b, t, FQ, HIDDEN)
        v = self.video_query.weight[None, None] + fq_clip.mean((2, 3))[:, :, None]  # (Lf, B, cQ, C)
        feats_clip = feats.reshape(b, t, HIDDEN, *feats.shape[-2:])
        v_logits, v_embed, v_masks, cq = [], [], [], []
        for layer in self.video_layers:
            v = v + torch.tanh(layer(v))
            emb = self.video_mask(v)
            v_logits.append(self.video_class(v))
            v_embed.append(emb)
            v_masks.append(torch.einsum("lbqc,btchw->lbqthw", emb, feats_clip))
            cq.append(self.sim_clip(v))
        return AVISMOutput(
            frame=FrameOutput(torch.stack(logits), torch.stack(masks), fq),
            video=VideoOutput(
                pred_logits=torch.stack(v_logits),
                pred_mask_embed=torch.stack(v_embed),
                pred_masks=torch.stack(v_masks),
                pred_fq_embed=self.sim_frame(fq_clip),
                pred_cq_embed=torch.stack(cq),
            ),
        )


COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230]], dtype=np.float32)


class ToyClips:
    """Clips of T frames with 1-2 coloured squares; `always_sounding` fixes 2 sounding instances."""

    def __init__(
        self, num_videos: int = 6, frames: int = 3, always_sounding: bool = False, seed: int = 0
    ):
        self.num_videos, self.frames, self.always, self.seed = (
            num_videos,
            frames,
            always_sounding,
            seed,
        )

    def __len__(self) -> int:
        return self.num_videos

    def sample(self, index: int, epoch: int) -> ClipSample:
        rng = np.random.default_rng([self.seed, epoch, index])
        video = index % self.num_videos
        vrng = np.random.default_rng([self.seed, 99, video])
        n = 2 if self.always else int(vrng.integers(1, 3))
        labels = vrng.choice(K, size=n, replace=False)
        frames = np.full((self.frames, 3, SIZE, SIZE), 20.0, dtype=np.float32)
        masks = np.zeros((n, self.frames, SIZE, SIZE), dtype=bool)
        valid = np.ones((n, self.frames), dtype=bool)
        if not self.always:
            valid = rng.random((n, self.frames)) > 0.25
        audio = np.zeros((self.frames, AUDIO_DIM), dtype=np.float32)
        for i in range(n):
            y, x = vrng.integers(0, SIZE - 12, size=2)
            for t in range(self.frames):
                yy, xx = y + t, x  # moves down one pixel per frame
                frames[t, :, yy : yy + 10, xx : xx + 10] = COLOURS[labels[i]][:, None, None]
                if valid[i, t]:
                    masks[i, t, yy : yy + 10, xx : xx + 10] = True
                    audio[t, labels[i]] = 1.0
        keep = valid.any(1)
        return ClipSample(
            frames=torch.from_numpy(frames),
            audio=torch.from_numpy(audio),
            labels=torch.from_numpy(labels.astype(np.int64))[keep],
            track_ids=torch.arange(n, dtype=torch.int64)[keep] + 10 * video,
            masks=torch.from_numpy(masks)[keep],
            valid=torch.from_numpy(valid)[keep],
            video_id=video,
            frame_indices=torch.arange(self.frames),
        )


def toy_config(**overrides) -> TrainConfig:
    cfg = TrainConfig(
        model_preset="toy",
        data=DataConfig(clip_frames=3),
        optim=OptimConfig(
            lr=3e-3, clip_grad_norm=1.0, warmup_iters=2, warmup_factor=0.1, decay_steps=[1000]
        ),
        loss=LossConfig(num_points=None),
        iterations=20,
        batch_size=2,
        log_every=2,
        checkpoint_every=5,
        eval_every=-1,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def toy_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    info,
    dataset: ToyClips | None = None,
    model_class: type[ToyAVISM] | None = None,
    final_dataset: ToyClips | None = None,  # clips of the final stage (`data.final_from`)
    **trainer_kwargs: Any,  # further Trainer options (repeats, final_repeats)
) -> Trainer:
    torch.manual_seed(cfg.seed)
    model = (model_class or ToyAVISM)()
    criterion = AVISMCriterion(
        K,
        weights=LossWeights(sim=cfg.loss.sim_weight),
        num_points=cfg.loss.num_points,
    )
    return Trainer(
        cfg,
        model,
        criterion,
        dataset or ToyClips(),
        collate_clips,
        run_dir,
        info,
        model_config={"toy": True},
        final_dataset=final_dataset,
        **trainer_kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    """torchrun worker: train the toy model and save each rank's final parameters."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        cfg = toy_config(iterations=args.iterations, checkpoint_every=100)
        trainer = toy_trainer(cfg, args.run_dir, info, ToyClips(always_sounding=True))
        trainer.train()
        torch.save(trainer.module.state_dict(), args.run_dir / f"params_rank{info.rank}.pt")
    finally:
        cleanup_distributed()
    return 0


def test_toy_model_follows_the_output_contract():
    batch = collate_clips([ToyClips().sample(i, 0) for i in range(2)])
    out = ToyAVISM()(batch.frames, batch.audio, batch.image_sizes)
    hm = SIZE // STRIDE
    assert out.frame.pred_logits.shape == (FRAME_LAYERS, 2 * 3, FQ, K + 1)
    assert out.frame.pred_masks.shape == (FRAME_LAYERS, 6, FQ, hm, hm)
    assert out.video.pred_masks.shape == (VIDEO_LAYERS, LAST_LAYERS, 2, CQ, 3, hm, hm)
    assert out.video.pred_fq_embed.shape == (LAST_LAYERS, 2, 3, FQ, HIDDEN)
    assert out.video.pred_cq_embed.shape == (VIDEO_LAYERS, LAST_LAYERS, 2, CQ, HIDDEN)


if __name__ == "__main__":
    sys.exit(main())
