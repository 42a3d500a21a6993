"""Score a model on an AVISeg split: whole-video inference -> results records -> avis.eval.

Used for the periodic evaluation during training and for the audio ablation. Inference is
the standard whole-video procedure (`avis.inference.VideoPredictor` on the split's frames and
precomputed audio features); records are scored with both protocols of `avis.eval.evaluate`.

Audio modes: `real` (the video's own features), `shuffled` (each video gets the features of
another video of the split, a fixed derangement, tiled or cut to its length), `zeros`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avis.errors import DataError

LOG = logging.getLogger("avis.train")
AUDIO_MODES = ("real", "shuffled", "zeros")
PROTOCOL_SUFFIX = {"fixed": "", "official": "_official"}  # metric name suffix per protocol
HEADLINE = {"FSLA": "FA", "HOTA": "HOTA", "mAP": "AP_all"}  # our name -> avis.eval key
SHUFFLE_SEED = 1234


def derangement(n: int, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """A permutation of range(n) without fixed points (identity for n < 2)."""
    if n < 2:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Tile or cut (T', D) features to (length, D)."""
    reps = -(-length // max(len(audio), 1))
    return np.tile(audio, (reps, 1))[:length]


def subset_annotations(data: dict[str, Any], video_ids: set[int]) -> dict[str, Any]:
    return {
        **data,
        "videos": [v for v in data["videos"] if v["id"] in video_ids],
        "annotations": [a for a in data["annotations"] if a["video_id"] in video_ids],
    }


class SplitEvaluator:
    """Callable(model) -> {"FSLA", "HOTA", "mAP", "FSLA_official", ...} on one split."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        model_config: Any,  # AVISMConfig
        class_names: list[str],
        *,
        max_videos: int = 0,
        audio: str = "real",
        protocols: tuple[str, ...] = ("fixed", "official"),
        progress: bool = False,
        split_components: bool | None = None,  # None: the config's setting
        precision: str | None = None,  # avis.precision mode; None = the device's default
    ) -> None:
        from avis.data import load_split
        from avis.eval import load_ground_truth

        if audio not in AUDIO_MODES:
            raise DataError(f"audio mode must be one of {AUDIO_MODES}, got {audio!r}")
        self.data = load_split(root, split, spatial_audio=model_config.spatial_audio)
        self.videos = sorted(self.data.videos, key=lambda v: v.id)
        if max_videos > 0:
            self.videos = self.videos[:max_videos]
        gt_path = Path(root) / f"{split}.json"
        raw = json.loads(gt_path.read_text())
        self.gt = load_ground_truth(subset_annotations(raw, {v.id for v in self.videos}))
        self.model_config, self.class_names = model_config, class_names
        self.audio, self.protocols, self.progress = audio, protocols, progress
        self.split_components = split_components
        self.precision = precision
        self.category_ids = [c.id for c in self.data.categories]

    def predict_records(self, model: nn.Module) -> list[dict]:
        from avis.inference.predictor import VideoPredictor
        from avis.inference.results import video_records
        from avis.inference.shipped import ModelInfo
        from avis.models.avism import AVISM

        if not isinstance(model, AVISM):
            raise TypeError(f"evaluation needs an AVISM model, found {type(model).__name__}")
        device = next(model.parameters()).device
        info = ModelInfo("training", "avis", list(self.class_names), None)
        predictor = VideoPredictor(
            model, self.model_config, info, device=device, streaming=False,
            split_components=self.split_components, precision=self.precision,
        )  # fmt: skip
        audios = [self.data.load_audio_input(v) for v in self.videos]
        perm = derangement(len(self.videos))
        records: list[dict] = []
        for index, video in enumerate(_maybe_progress(self.videos, self.progress)):
            frames = self.data.load_frames(video)  # (T, H, W, 3)
            audio = audios[index]
            if self.audio == "shuffled":
                audio = fit_length(audios[perm[index]], len(frames))
            elif self.audio == "zeros":
                audio = np.zeros_like(audio)
            scores, labels, masks = predictor.predict_arrays(frames, audio.astype(np.float32))
            records += video_records(video.id, scores, labels, masks, self.category_ids)
        return records

    def score(self, records: list[dict]) -> dict[str, float]:
        from avis.eval import evaluate

        metrics: dict[str, float] = {}
        for protocol in self.protocols:
            result = evaluate(self.gt, records, protocol=protocol)
            for name, key in HEADLINE.items():
                value = result.metrics[key]
                metrics[name + PROTOCOL_SUFFIX[protocol]] = (
                    float("nan") if value is None else float(value)
                )
        return metrics

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            return self.score(self.predict_records(model))
        finally:
            model.train(was_training)


def _maybe_progress(items: list, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("evaluate", total=len(items))
        for item in items:
            yield item
            bar.advance(task)
