"""Random scenes: objects with smooth trajectories, a background, and a sounding schedule.

Everything is drawn from one `np.random.Generator`, in a fixed order, so a scene is a pure
function of its seed and the config. Positions are continuous functions of time t (seconds;
frame i is t = i), so the mp4 renderer can draw in-between frames.

Letters: T frames (= seconds), S frame side (px).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from avis.data.synth.classes import SYNTH_CLASSES, shape_parts
from avis.data.synth.config import SynthConfig

PLACEMENT_TRIES = 30
MIN_SPACING = 0.7  # initial centre distance >= this x the mean of the two sizes
WOBBLE_PERIOD = (8.0, 30.0)  # seconds
SIZE_PULSE = 0.08  # relative size oscillation
ENTER_SECONDS = (3.0, 8.0)  # duration of an entrance
LEAVE_START = (0.4, 0.8)  # exit starts at this fraction of the video
OUTSIDE_MARGIN = 0.8  # x size: how far past the border an entering/leaving object goes
BG_SATURATION = (0.08, 0.3)
BG_VALUE = (0.35, 0.6)
BG_GRIDS = (5, 17)  # coarse and fine texture grids
OBJ_SATURATION = (0.75, 1.0)
OBJ_VALUE = (0.8, 1.0)


def hsv_to_rgb255(hue_deg: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, sat, val), dtype=np.float32) * 255.0


@dataclass(frozen=True)
class SceneObject:
    class_index: int
    color: np.ndarray  # (3,) RGB 0..255
    size: float  # px
    base: np.ndarray  # (2,) centre at t = 0 before wobble
    velocity: np.ndarray  # (2,) px / s
    wobble: np.ndarray  # (2, 3) per axis: amplitude, period, phase
    angle: float  # rad at t = 0
    spin: float  # rad / s
    pulse_phase: float
    enter: tuple[float, np.ndarray] | None  # (duration, offset at t = 0)
    leave: tuple[float, np.ndarray] | None  # (start time, offset at the end)
    length: int  # T, to place the leaving motion
    frame_size: int  # S

    def center(self, t: float) -> np.ndarray:
        amp, period, phase = self.wobble[:, 0], self.wobble[:, 1], self.wobble[:, 2]
        free = self.base + self.velocity * t + amp * np.sin(2 * np.pi * t / period + phase)
        margin = self.size / 2
        lo, span = margin, max(self.frame_size - 2 * margin, 1.0)
        folded = np.mod(free - lo, 2 * span)
        pos = lo + np.where(folded > span, 2 * span - folded, folded)  # bounce off the borders
        if self.enter is not None:
            duration, offset = self.enter
            pos = pos + offset * _smooth_ramp(1.0 - t / duration)
        if self.leave is not None:
            start, offset = self.leave
            pos = pos + offset * _smooth_ramp((t - start) / max(self.length - 1 - start, 1.0))
        return pos

    def parts(self, t: float) -> list[np.ndarray]:
        size = self.size * (1.0 + SIZE_PULSE * np.sin(0.5 * t + self.pulse_phase))
        return shape_parts(SYNTH_CLASSES[self.class_index].shape, self.center(t), size, self.angle + self.spin * t)


def _smooth_ramp(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class Scene:
    length: int  # T
    size: int  # S
    background: np.ndarray  # (S, S, 3) float32 0..255, static texture + pixel noise
    objects: list[SceneObject]  # back to front
    sounding_classes: list[int]
    distractor_classes: list[int]
    sounding: dict[int, np.ndarray]  # class index -> (T,) bool
    gains: dict[int, np.ndarray]  # class index -> (T,) float, 0 where silent


def _background(rng: np.random.Generator, size: int, cfg: SynthConfig) -> np.ndarray:
    base = hsv_to_rgb255(rng.uniform(0, 360), rng.uniform(*BG_SATURATION), rng.uniform(*BG_VALUE))
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    for grid, weight in zip(BG_GRIDS, (1.0, 0.5)):
        small = rng.normal(size=(3, grid, grid)).astype(np.float32)
        tint = 0.7 * small[:1] + 0.3 * small  # mostly brightness, a little colour
        layers = [np.asarray(Image.fromarray(ch, mode="F").resize((size, size), Image.Resampling.BICUBIC)) for ch in tint]
        img += np.stack(layers, axis=-1) * (cfg.texture * 255.0 * weight)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(cfg.pixel_noise)
    return np.clip(img, 0, 255)


def _schedule(rng: np.random.Generator, length: int, classes: list[int], cfg: SynthConfig):
    silent = np.zeros(length, dtype=bool)
    n_silent = int(rng.binomial(length, cfg.silent_fraction))
    if n_silent:
        start = int(rng.integers(length - n_silent + 1))
        silent[start : start + n_silent] = True
    on = {}
    for c in classes:
        state = np.zeros(length, dtype=bool)
        t = 0
        while t < length:
            seg = int(rng.integers(cfg.segment_seconds[0], cfg.segment_seconds[1] + 1))
            state[t : t + seg] = rng.random() < cfg.on_prob
            t += seg
        on[c] = state & ~silent
    for i in np.flatnonzero(~silent):  # outside silent gaps something sounds
        if not any(on[c][i] for c in classes):
            previous = [c for c in classes if i > 0 and on[c][i - 1]]
            on[previous[0] if previous else classes[int(rng.integers(len(classes)))]][i] = True
    for c in classes:  # every sounding class sounds at least once
        if not on[c].any():
            free = np.flatnonzero(~silent)
            free = free if len(free) else np.arange(length)
            start = int(free[rng.integers(len(free))])
            on[c][start : start + cfg.segment_seconds[0]] = True
    gains = {}
    for c in classes:
        level = np.repeat(rng.uniform(*cfg.gain, size=length // cfg.segment_seconds[0] + 1), cfg.segment_seconds[0])
        gains[c] = np.where(on[c], level[:length], 0.0)
    return on, gains


def _place(rng: np.random.Generator, sizes: list[float], frame: int) -> list[np.ndarray]:
    centers: list[np.ndarray] = []
    for size in sizes:
        best: np.ndarray | None = None
        best_gap = -np.inf
        for _ in range(PLACEMENT_TRIES):
            c = rng.uniform(size / 2, frame - size / 2, size=2)
            gap = min((np.linalg.norm(c - o) / (MIN_SPACING * (size + s) / 2) for o, s in zip(centers, sizes)), default=np.inf)
            if gap > best_gap:
                best, best_gap = c, gap
            if gap >= 1.0:
                break
        assert best is not None, "the first placement try always beats a gap of -inf"
        centers.append(best)
    return centers


def _enter_or_leave(rng: np.random.Generator, obj: SceneObject) -> SceneObject:
    """Add a smooth move in from (or out through) the border nearest to the object."""
    entering = rng.random() < 0.5
    when = 0.0 if entering else float(rng.uniform(*LEAVE_START) * (obj.length - 1))
    pos = obj.center(when)
    gaps = np.array([pos[0], obj.frame_size - pos[0], pos[1], obj.frame_size - pos[1]])
    side = int(np.argmin(gaps))
    offset = np.zeros(2)
    offset[side // 2] = (-1.0 if side % 2 == 0 else 1.0) * (gaps[side] + OUTSIDE_MARGIN * obj.size)
    if entering:
        return replace(obj, enter=(float(rng.uniform(*ENTER_SECONDS)), offset))
    return replace(obj, leave=(when, offset))


def sample_scene(rng: np.random.Generator, length: int, cfg: SynthConfig) -> Scene:
    k = min(cfg.num_classes, len(SYNTH_CLASSES))
    weights = np.array(cfg.sounding_class_weights, dtype=np.float64)
    n_sound = min(int(rng.choice(len(weights), p=weights / weights.sum())) + 1, k, cfg.max_classes_per_video)
    n_distract = int(rng.random() < cfg.distractor_prob)
    n_distract += int(n_distract and rng.random() < cfg.second_distractor_prob)
    n_distract = min(n_distract, cfg.max_classes_per_video - n_sound, k - n_sound)
    chosen = [int(c) for c in rng.permutation(k)[: n_sound + n_distract]]
    sounding, distractors = chosen[:n_sound], chosen[n_sound:]
    instances = [(c, 1 + int(rng.random() < cfg.twin_prob)) for c in sounding] + [(c, 1) for c in distractors]
    while sum(n for _, n in instances) > cfg.max_objects:  # drop twins first, then distractors
        twin = next((i for i, (_, n) in enumerate(instances) if n > 1), None)
        if twin is not None:
            instances[twin] = (instances[twin][0], 1)
        else:
            distractors.remove(instances.pop()[0])
    classes = [c for c, n in instances for _ in range(n)]
    scale = cfg.scale()
    sizes = [float(rng.uniform(*cfg.object_size)) * scale for _ in classes]
    centers = _place(rng, sizes, cfg.size)
    objects = []
    for c, size, center in zip(classes, sizes, centers):
        color = hsv_to_rgb255(SYNTH_CLASSES[c].hue + rng.uniform(-cfg.hue_jitter, cfg.hue_jitter), rng.uniform(*OBJ_SATURATION), rng.uniform(*OBJ_VALUE))
        direction = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(0, cfg.speed) * scale * np.array([np.cos(direction), np.sin(direction)])
        wobble = np.stack([rng.uniform(0, cfg.wobble * scale, 2), rng.uniform(*WOBBLE_PERIOD, 2), rng.uniform(0, 2 * np.pi, 2)], axis=1)
        angle, spin = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(-cfg.spin, cfg.spin))
        obj = SceneObject(
            class_index=c, color=color, size=size, base=center, velocity=velocity, wobble=wobble,
            angle=float(angle), spin=float(spin), pulse_phase=float(rng.uniform(0, 2 * np.pi)),
            enter=None, leave=None, length=length, frame_size=cfg.size,
        )  # fmt: skip
        if rng.random() < cfg.enter_leave_prob:
            obj = _enter_or_leave(rng, obj)
        objects.append(obj)
    order = rng.permutation(len(objects))  # depth: later = in front
    objects = [objects[i] for i in order]
    background = _background(rng, cfg.size, cfg)
    on, gains = _schedule(rng, length, sounding, cfg)
    return Scene(
        length=length, size=cfg.size, background=background, objects=objects,
        sounding_classes=sounding, distractor_classes=distractors, sounding=on, gains=gains,
    )  # fmt: skip
