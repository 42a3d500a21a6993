"""Cross-seed evaluation: score a checkpoint on fresh synthetic test splits (issue 19).

    report = evaluate_seeds("model_final.pth", [101, 102, 103], work_dir="runs/seeds")
    report.summary()["nosplit"]["mAP"]  # {"mean": ..., "spread": ..., "min": ..., "max": ...}

For each seed a test split of the synthetic benchmark is generated (only the test split; its
videos are a pure function of (seed, index, config), so `n` videos are the first `n` of the
full 120-video test split of that seed) into `<work_dir>/<split_name(...)>`, and reused when a
split with the same generator version, seed, config and size is there already. The model runs
once per video (whole-video inference, the split's precomputed audio features); its prediction
is scored as it is (`nosplit`) and after component splitting (`split`, the
`split_components` inference option with the checkpoint's blob/frame-share settings), with:

- FSLA, HOTA, mAP under the fixed and the official protocol (`SplitEvaluator.score`);
- mAP_twins / mAP_others (fixed protocol): mAP on the videos with / without twins, videos
  where two ground-truth tracks of one class are annotated (sounding and visible) in a
  common frame (`twin_video_ids`), the "videos with twins" of docs/training.md.

Summary over seeds: mean and spread (max - min) of every metric; NaN (null in JSON) when a
seed has no value (e.g. no twin video).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from avis.data.synth.config import DEFAULT_SEED, SynthConfig
from avis.errors import AvisError

LOG = logging.getLogger(__name__)
SPLIT = "test"
SETTINGS: dict[str, bool] = {"nosplit": False, "split": True}  # name -> split_components
TWIN_KEYS = ("mAP_twins", "mAP_others")
DEFAULT_VIDEOS = 120  # the size of the benchmark's test split
DEFAULT_PRESET, STEREO_PRESET = "easy", "stereo"  # for mono models (v1) / spatial-audio models (v2)
MIN_SIZE, MAX_SIZE = 32, 4096  # frame side, px (as `avis synth`)


# ------------------------------------------------------------------ data
def split_name(seed: int, preset: str, config: SynthConfig, num_videos: int) -> str:
    """Folder name: version, preset, size, seed, count and a digest of the whole config."""
    digest = hashlib.sha1(json.dumps(_jsonable(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"synth-v{config.version}-{preset}-{config.size}px-{digest}-seed{seed}-n{num_videos}"


def _jsonable(config: SynthConfig) -> dict:
    return json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as read back from a file


def cached_split_matches(root: Path, seed: int, config: SynthConfig, num_videos: int) -> bool:
    """True when `root/test.json` was written by this generator version for this seed/config."""
    from avis.data.synth.target import synth_version

    path = root / f"{SPLIT}.json"
    if not path.is_file():
        return False
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        version = synth_version(obj, str(path))
    except (OSError, ValueError):  # DataError is a ValueError: regenerate
        return False
    info = obj.get("info", {})
    return (
        version == config.version
        and info.get("seed") == seed
        and info.get("config") == _jsonable(config)
        and len(obj.get("videos", [])) == num_videos
    )


def make_test_split(
    work_dir: str | Path,
    seed: int,
    config: SynthConfig,
    num_videos: int,
    *,
    preset: str = "easy",
    workers: int | None = None,
    on_video: Callable[[], None] | None = None,
) -> tuple[Path, bool]:
    """The data set root holding `test.json` / `test/` of this seed -> (root, reused)."""
    from avis.data.synth import generate_dataset
    from avis.data.synth.target import check_target, staged_folder

    root = Path(work_dir) / split_name(seed, preset, config, num_videos)
    if cached_split_matches(root, seed, config, num_videos):
        return root, True
    check_target(root, force=True)  # never writes over anything but an earlier synthetic set
    with staged_folder(root) as stage:  # complete or absent, never half written
        generate_dataset(
            stage,
            seed=seed,
            counts={SPLIT: num_videos},
            config=config,
            workers=workers,
            on_video=on_video,
        )
    return root, False


def twin_video_ids(gt: Mapping[str, Any]) -> set[int]:
    """Ids of the videos where two GT tracks of one class are both annotated in some frame."""
    present: dict[tuple[int, int], list[np.ndarray]] = defaultdict(list)
    for ann in gt["annotations"]:
        mask = np.array([seg is not None for seg in ann["segmentations"]], dtype=np.int64)  # (T,)
        present[(ann["video_id"], ann["category_id"])].append(mask)
    return {
        vid
        for (vid, _), tracks in present.items()
        if len(tracks) > 1 and np.sum(tracks, axis=0).max() >= 2
    }


def seen_seeds(weights: str | Path) -> dict[int, str]:
    """Data seeds a checkpoint may have been trained or tuned on -> why: the default data set
    of `avis synth` (the shipped checkpoint's), and the seeds of the train/val JSON named by
    the run folder's config.yaml (`<run>/model_final.pth`, `<run>/checkpoints/*.pth`)."""
    seeds = {
        DEFAULT_SEED: f"the default `avis synth` data set (seed {DEFAULT_SEED}), which the shipped checkpoint was trained and tuned on"
    }
    weights = Path(weights)
    for config_path in (weights.parent / "config.yaml", weights.parent.parent / "config.yaml"):
        if not config_path.is_file():
            continue
        try:
            data = (yaml.safe_load(config_path.read_text()) or {}).get("data", {})
            root_text = str(data.get("root") or "")
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            continue
        if not root_text:
            continue
        root = Path(root_text)
        for split in ("train", "val"):
            try:
                info = json.loads((root / f"{split}.json").read_text(encoding="utf-8")).get(
                    "info", {}
                )
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(info, dict) and isinstance(info.get("seed"), int):
                seeds.setdefault(info["seed"], f"the {split} split of {root} ({config_path})")
    return seeds


# ------------------------------------------------------------------ results
def summarize(values: Sequence[float]) -> dict[str, float]:
    """mean, spread (max - min), min, max; all NaN if any value is NaN or there is none."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        return {k: math.nan for k in ("mean", "spread", "min", "max")}
    return {
        "mean": float(arr.mean()),
        "spread": float(arr.max() - arr.min()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


@dataclass
class SeedResult:
    seed: int
    root: Path
    num_videos: int
    num_twin_videos: int
    metrics: dict[str, dict[str, float]]  # setting (SETTINGS) -> metric -> value
    reused: bool = False
    seconds: float = 0.0


@dataclass
class SeedsReport:
    weights: str
    preset: str
    config: SynthConfig
    results: list[SeedResult] = field(default_factory=list)

    def metric_names(self) -> list[str]:
        return list(self.results[0].metrics[next(iter(SETTINGS))]) if self.results else []

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """setting -> metric -> {mean, spread, min, max} over the seeds."""
        return {
            setting: {
                m: summarize([r.metrics[setting][m] for r in self.results])
                for m in self.metric_names()
            }
            for setting in SETTINGS
        }

    def to_json(self) -> dict[str, Any]:
        def clean(obj):
            if isinstance(obj, float):
                return None if math.isnan(obj) else round(obj, 4)
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            return obj

        return clean({
            "weights": self.weights, "preset": self.preset, "avis_synth_version": self.config.version,
            "size": self.config.size, "split": SPLIT, "settings": SETTINGS,
            "seeds": [
                {"seed": r.seed, "num_videos": r.num_videos, "num_twin_videos": r.num_twin_videos,
                 "data": str(r.root), "reused": r.reused, "seconds": round(r.seconds, 1), "metrics": r.metrics}
                for r in self.results
            ],
            "summary": self.summary(),
        })  # fmt: skip


# ------------------------------------------------------------------ evaluation
def score_with_twins(
    evaluator: Any, raw_gt: Mapping[str, Any], twins: set[int], records: list[dict]
) -> dict[str, float]:
    """`evaluator.score(records)` plus mAP_twins / mAP_others (fixed protocol)."""
    from avis.engine.evaluation import HEADLINE, subset_annotations
    from avis.eval import evaluate

    metrics = evaluator.score(records)
    all_ids = {v.id for v in evaluator.videos}
    for key, ids in zip(TWIN_KEYS, (all_ids & twins, all_ids - twins)):
        if not ids:
            metrics[key] = math.nan
            continue
        gt = subset_annotations(dict(raw_gt), ids)
        value = evaluate(
            gt, [r for r in records if r["video_id"] in ids], protocol="fixed"
        ).metrics[HEADLINE["mAP"]]
        metrics[key] = math.nan if value is None else float(value)
    return metrics


def evaluate_split(
    predictor: Any, root: Path, *, progress: bool = False, label: str = "predict"
) -> tuple[dict[str, dict[str, float]], int]:
    """One model pass over `root`'s test split -> (setting -> metrics, number of twin videos)."""
    import torch

    from avis.engine.evaluation import SplitEvaluator
    from avis.inference import components
    from avis.inference.results import video_records

    cfg = predictor.config
    evaluator = SplitEvaluator(root, SPLIT, cfg, list(predictor.class_names))
    raw_gt = json.loads((root / f"{SPLIT}.json").read_text(encoding="utf-8"))
    twins = twin_video_ids(raw_gt)
    options = components.SplitOptions(cfg.split_min_blob_fraction, cfg.split_min_frame_share)
    if predictor.split is not None:
        raise ValueError("evaluate_split needs a predictor built with split_components=False")
    records: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with torch.no_grad(), _bar(label, len(evaluator.videos), progress) as advance:
        for video in evaluator.videos:
            frames = evaluator.data.load_frames(video)  # (T, H, W, 3)
            audio = evaluator.data.load_audio_input(video).astype(np.float32)  # (T, D [+ B*P])
            prediction = predictor.predict((frames, audio))
            for name, split in SETTINGS.items():
                pred = components.split_components(prediction, options) if split else prediction
                records[name] += video_records(
                    video.id, pred.scores, pred.labels, pred.masks(), evaluator.category_ids
                )
            advance()
    metrics = {
        name: score_with_twins(evaluator, raw_gt, twins, recs) for name, recs in records.items()
    }
    return metrics, len(twins & {v.id for v in evaluator.videos})


def add_mono_maps(root: Path) -> int:
    """The maps of where the sound is (`FEATSpatial/`) for a mono (version-1) split, made from
    each test video's WAV as `avis extract-audio --spatial` makes them (a mono track is heard
    at the centre), so that a stereo model can be scored on it; maps already there are kept.
    -> the number written."""
    from avis.audio.spatial import window_maps
    from avis.data import load_split
    from avis.io.audio_file import load_audio
    from avis.io.npy import save_npy_atomic

    data = load_split(root, SPLIT)
    written = 0
    for video in data.videos:
        out = data.spatial_path(video)
        if out.is_file():
            continue
        samples, rate = load_audio(data.wav_path(video), seconds=video.length + 2.0)
        out.parent.mkdir(exist_ok=True)
        save_npy_atomic(out, window_maps(samples, rate, np.arange(video.length)))
        written += 1
    return written


def check_seeds(seeds: Sequence[int], seen: Mapping[int, str], allow_seen: bool) -> None:
    if not seeds:
        raise AvisError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise AvisError(f"seeds must differ, got {list(seeds)}")
    if any(s < 0 for s in seeds):
        raise AvisError(f"seeds must be >= 0, got {list(seeds)}")
    for seed in seeds:
        if seed in seen:
            message = (
                f"seed {seed} is the seed of {seen[seed]}: its test videos are not unseen data"
            )
            if not allow_seen:
                raise AvisError(message + " (choose other seeds, or allow it explicitly)")
            LOG.warning(message)


def evaluate_seeds(
    weights: str | Path,
    seeds: Sequence[int],
    *,
    work_dir: str | Path,
    preset: str | None = None,
    num_videos: int = DEFAULT_VIDEOS,
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    workers: int | None = None,
    allow_seen_seeds: bool = False,
    progress: bool = False,
    on_seed: Callable[[SeedResult], None] | None = None,
) -> SeedsReport:
    """Generate (or reuse) one test split per seed and score the checkpoint on each.

    preset: None = the benchmark the checkpoint reads: `stereo` (version 2) for a model that
    reads where the sound is (spatial_audio), else `easy` (version 1).
    overrides: SynthConfig fields replacing the preset's (e.g. size, min_frames, max_frames)."""
    from avis.data.synth import preset as synth_preset
    from avis.inference.predictor import VideoPredictor

    if num_videos < 1:
        raise AvisError(f"need at least one video per seed, got {num_videos}")
    check_seeds(seeds, seen_seeds(weights), allow_seen_seeds)
    predictor = VideoPredictor.from_checkpoint(weights, device=device, split_components=False)
    spatial = predictor.config.spatial_audio
    if preset is None:
        preset = STEREO_PRESET if spatial else DEFAULT_PRESET
    try:
        config = synth_preset(preset, **dict(overrides or {}))
    except (ValueError, TypeError) as err:
        raise AvisError(str(err)) from None
    if not 1 <= config.min_frames <= config.max_frames or not MIN_SIZE <= config.size <= MAX_SIZE:
        raise AvisError(
            f"need 1 <= min_frames <= max_frames and {MIN_SIZE} <= size <= {MAX_SIZE}; found "
            f"min_frames {config.min_frames}, max_frames {config.max_frames}, size {config.size}"
        )
    mono_maps = spatial and not config.stereo  # a stereo model scored on mono splits
    if mono_maps:
        LOG.warning(
            "%s reads where the sound is (a stereo model); the %s preset makes mono version-1 "
            "splits, whose maps put every sound at the centre (--preset %s or hard_stereo: "
            "the stereo benchmark it was made for)", weights, preset, STEREO_PRESET,
        )  # fmt: skip
    report = SeedsReport(str(weights), preset, config)
    for seed in seeds:
        start = time.perf_counter()
        with _bar(f"synth seed {seed}", num_videos, progress) as advance:
            root, reused = make_test_split(
                work_dir, seed, config, num_videos, preset=preset, workers=workers, on_video=advance
            )
        if mono_maps:
            add_mono_maps(root)
        metrics, num_twins = evaluate_split(
            predictor, root, progress=progress, label=f"predict seed {seed}"
        )
        result = SeedResult(
            seed, root, num_videos, num_twins, metrics, reused, time.perf_counter() - start
        )
        report.results.append(result)
        if on_seed is not None:
            on_seed(result)
    return report


@contextmanager
def _bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable: a rich progress bar (transient) while `enabled`."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("videos", total=total)
        yield lambda: bar.advance(task)


__all__ = [
    "SETTINGS",
    "SeedResult",
    "SeedsReport",
    "evaluate_seeds",
    "make_test_split",
    "summarize",
    "twin_video_ids",
]
