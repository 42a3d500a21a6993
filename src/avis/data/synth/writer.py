"""Generating the synthetic benchmark on disk, in the AVISeg layout.

    <out>/{train,val,test}.json
    <out>/<split>/JPEGImages/<video>/<t:05d>.jpg
    <out>/<split>/WAVAudios/<video>.wav          16 kHz 16-bit, mono (v1) or stereo (v2)
    <out>/<split>/FEATAudios/<video>.npy         (T, 128) float32, weight-free log-mel features
    <out>/<split>/FEATSpatial/<video>.npy        (T, 32, 16) float32, where the sound is (v2 only)
    <out>/<split>/MP4/<video>.mp4                only with mp4_fps (H.264 + AAC)

Each video is a pure function of (seed, split, index, config): its generator is seeded by
`SeedSequence([seed, split code, index])`, with separate child streams for the scene and
the sound. Videos are made in worker processes; the JSON is
assembled in video order, written with sorted keys. Same seed -> byte-identical files
(the mp4 files depend on the encoder build as well).

Letters: T frames (= seconds), S frame side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from avis.data.masks import area_and_bbox
from avis.data.split import FEAT_DIR, FRAMES_DIR, SPATIAL_DIR, WAV_DIR
from avis.data.synth import target
from avis.data.synth.classes import SYNTH_CLASSES
from avis.data.synth.config import VERSION_KEY, SynthConfig
from avis.data.synth.media import write_mp4, write_wav
from avis.data.synth.render import render_frame, scene_parts, visible_polygons
from avis.data.synth.scene import Scene, SceneObject, sample_scene
from avis.data.synth.sound import class_signal, mix, place_source, to_pcm16
from avis.io.atomic import write_text_atomic
from avis.runtime import scoped_environ

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2, "demo": 3}
DEFAULT_COUNTS: dict[str, int] = {"train": 600, "val": 60, "test": 120}
MP4_DIR = "MP4"
CHUNKSIZE = 4
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
GENERATOR_NAME = target.GENERATOR_NAME
PAN_STEP = 0.05  # seconds between the object positions a stereo source follows


@dataclass(frozen=True)
class VideoJob:
    split_dir: str
    name: str
    entropy: tuple[int, ...]  # SeedSequence entropy
    config: SynthConfig
    mp4_fps: int | None = None
    write_wav: bool = True


@dataclass
class VideoResult:
    name: str
    length: int
    tracks: list[dict]  # category_id (1..K), segmentations, bboxes, areas
    num_objects: int
    num_distractors: int


def _track_entries(scene: Scene, parts: list[list[list[np.ndarray]]], cfg: SynthConfig) -> list[dict]:
    """Annotation entries of the sounding objects; parts[t] = `scene_parts(scene, t)`."""
    min_area = cfg.min_visible_area * cfg.scale() ** 2
    tracks = []
    for index, obj in enumerate(scene.objects):
        if obj.class_index not in scene.sounding:
            continue  # a silent distractor: never annotated
        segs, boxes, areas = [], [], []
        for t in range(scene.length):
            seg = box = area = None
            if scene.sounding[obj.class_index][t]:
                polys = visible_polygons(parts[t], index, scene.size)
                if polys:
                    area, box = area_and_bbox(polys, scene.size, scene.size)
                    seg = polys if area >= min_area else None
                    if seg is None:
                        area = box = None
            segs.append(seg)
            boxes.append(box)
            areas.append(area)
        if any(s is not None for s in segs):
            tracks.append({"category_id": obj.class_index + 1, "segmentations": segs, "bboxes": boxes, "areas": areas})
    return tracks


def soundtrack(scene: Scene, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """(T * sample_rate,) float32 mix of the sounding classes and background noise; for a
    stereo config (version 2) `stereo_soundtrack`'s (T * sample_rate, 2)."""
    if cfg.stereo:
        return stereo_soundtrack(scene, cfg, rng)
    sr, n = cfg.sample_rate, scene.length * cfg.sample_rate
    signals = [class_signal(SYNTH_CLASSES[c], n, sr, rng, cfg.freq_jitter) for c in scene.sounding_classes]
    gains = [scene.gains[c] for c in scene.sounding_classes]
    return mix(signals, gains, sr, cfg.noise_level, rng, scene.length)


def horizontal_track(obj: SceneObject, length: int, sr: int) -> np.ndarray:
    """(T * sr,) the object's centre x per sample, in [-1, 1] across the frame (clipped
    outside it), from positions every PAN_STEP seconds."""
    times = np.arange(0.0, length + PAN_STEP, PAN_STEP)
    xs = np.array([obj.center(float(t))[0] for t in times]) / obj.frame_size * 2.0 - 1.0
    return np.interp(np.arange(length * sr) / sr, times, np.clip(xs, -1.0, 1.0))


def stereo_soundtrack(scene: Scene, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """(T * sample_rate, 2) float32 (left, right): every instance of a sounding class is its
    own source, gated by its class's schedule and placed at its horizontal position
    (`place_source`); the second of two twins is detuned by 1 +- u, u in cfg.twin_detune."""
    sr, n = cfg.sample_rate, scene.length * cfg.sample_rate
    sources, gains = [], []
    for c in scene.sounding_classes:
        detune = 1.0
        for obj in (o for o in scene.objects if o.class_index == c):
            signal = class_signal(SYNTH_CLASSES[c], n, sr, rng, cfg.freq_jitter, detune)
            sources.append(place_source(signal, horizontal_track(obj, scene.length, sr), sr))
            gains.append(scene.gains[c])
            step = 1.0 + rng.uniform(*cfg.twin_detune)
            detune = step if rng.random() < 0.5 else 1.0 / step
    return mix(sources, gains, sr, cfg.noise_level, rng, scene.length)


def make_video(job: VideoJob) -> VideoResult:
    """Write one video's frames, WAV, features (and mp4); return its annotation entries."""
    from avis.audio.features import weight_free_features
    from avis.audio.spatial import spatial_features

    cfg = job.config
    scene_seq, sound_seq = np.random.SeedSequence(list(job.entropy)).spawn(2)
    scene_rng = np.random.default_rng(scene_seq)
    length = int(scene_rng.integers(cfg.min_frames, cfg.max_frames + 1))
    scene = sample_scene(scene_rng, length, cfg)
    split_dir = Path(job.split_dir)
    frame_dir = split_dir / FRAMES_DIR / job.name
    frame_dir.mkdir(parents=True, exist_ok=True)
    parts = [scene_parts(scene, float(t)) for t in range(length)]
    for t in range(length):
        frame = render_frame(scene, parts[t], cfg.supersample)
        Image.fromarray(frame).save(frame_dir / f"{t:05d}.jpg", quality=cfg.jpeg_quality)
    waveform = soundtrack(scene, cfg, np.random.default_rng(sound_seq))  # (N,) or (N, 2)
    pcm = np.frombuffer(to_pcm16(waveform), dtype="<i2").reshape(waveform.shape)  # what the WAV holds
    if job.write_wav:
        write_wav(split_dir / WAV_DIR / f"{job.name}.wav", waveform, cfg.sample_rate)
    np.save(split_dir / FEAT_DIR / f"{job.name}.npy", weight_free_features(pcm, cfg.sample_rate, length))
    if cfg.stereo:
        spatial = spatial_features(pcm, cfg.sample_rate, length)
        np.save(split_dir / SPATIAL_DIR / f"{job.name}.npy", spatial)
    if job.mp4_fps:
        times = (k / job.mp4_fps for k in range(length * job.mp4_fps))
        frames = (render_frame(scene, scene_parts(scene, t), cfg.supersample) for t in times)
        write_mp4(split_dir / MP4_DIR / f"{job.name}.mp4", frames, job.mp4_fps, waveform, cfg.sample_rate)
    return VideoResult(
        name=job.name, length=length, tracks=_track_entries(scene, parts, cfg),
        num_objects=len(scene.objects), num_distractors=len(scene.distractor_classes),
    )  # fmt: skip


def split_json(results: list[VideoResult], cfg: SynthConfig, seed: int, split: str) -> dict:
    videos: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for vid, res in enumerate(results, start=1):
        videos.append({
            "id": vid, "file_names": [f"{res.name}/{t:05d}.jpg" for t in range(res.length)],
            "length": res.length, "height": cfg.size, "width": cfg.size,
        })  # fmt: skip
        for track in res.tracks:
            annotations.append({"id": len(annotations) + 1, "video_id": vid, "iscrowd": 0, "height": cfg.size, "width": cfg.size, **track})
    categories = [{"id": i + 1, "name": c.name} for i, c in enumerate(SYNTH_CLASSES[: cfg.num_classes])]
    info = {
        "description": GENERATOR_NAME, VERSION_KEY: cfg.version,
        "seed": seed, "split": split, "config": cfg.to_dict(),
    }  # fmt: skip
    return {"info": info, "videos": videos, "annotations": annotations, "categories": categories}


def _jobs(out: Path, split: str, count: int, seed: int, cfg: SynthConfig, mp4_fps: int | None, wav: bool = True) -> list[VideoJob]:
    split_dir = out / split
    for sub in (FRAMES_DIR, WAV_DIR, FEAT_DIR) + ((SPATIAL_DIR,) if cfg.stereo else ()) + ((MP4_DIR,) if mp4_fps else ()):
        (split_dir / sub).mkdir(parents=True, exist_ok=True)
    return [VideoJob(str(split_dir), f"{split}_{i:04d}", (seed, SPLIT_CODES[split], i), cfg, mp4_fps, wav) for i in range(count)]


def _single_threaded_math() -> dict[str, str]:
    """Worker processes inherit 1-thread BLAS/OpenMP (several BLAS threads per worker on a
    small machine oversubscribe it: the audio features became ~6x slower in measurements);
    variables the user set are kept."""
    return {key: "1" for key in THREAD_ENV_VARS if key not in os.environ}


def generate_dataset(
    out: Path | str,
    *,
    seed: int = 0,
    counts: dict[str, int] | None = None,
    config: SynthConfig | None = None,
    workers: int | None = None,
    mp4_fps: int | None = None,
    wav: bool = True,
    on_video: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Write the splits (default 600/60/120 videos); returns the number of videos per split.

    workers: processes (default: the CPU count); 1 = in this process.
    wav: write the WAV soundtracks (about 32 kB per second of video; the features are always
    computed from the soundtrack, written or not).
    """
    cfg = config or SynthConfig()
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    unknown = set(counts) - set(SPLIT_CODES)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; choose from {sorted(SPLIT_CODES)}")
    out = Path(out)
    jobs = {split: _jobs(out, split, n, seed, cfg, mp4_fps, wav) for split, n in counts.items()}
    flat = [job for split_jobs in jobs.values() for job in split_jobs]
    workers = max(1, min(workers or os.cpu_count() or 1, len(flat) or 1))
    results: list[VideoResult] = []
    if workers == 1:
        for job in flat:
            results.append(make_video(job))
            if on_video:
                on_video()
    else:
        with scoped_environ(_single_threaded_math()), ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for res in pool.map(make_video, flat, chunksize=CHUNKSIZE):
                results.append(res)
                if on_video:
                    on_video()
    start = 0
    for split, split_jobs in jobs.items():
        obj = split_json(results[start : start + len(split_jobs)], cfg, seed, split)
        start += len(split_jobs)
        write_text_atomic(out / f"{split}.json", json.dumps(obj, sort_keys=True, separators=(",", ":")))
    return {split: len(split_jobs) for split, split_jobs in jobs.items()}
