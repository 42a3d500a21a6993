"""The synthetic sound sources: a visual identity (shape + hue family) and a sound per class.

Shapes are unions of convex parts in a unit frame ([-1, 1]^2, y down); an object of size s
is the shape scaled by s / 2, rotated and moved. Sounds are named kinds with parameters
(see sound.py); frequencies are in Hz, rates in events per second.

Letters: V vertices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CIRCLE_VERTICES = 24
STAR_POINTS = 5
STAR_INNER_RADIUS = 0.45
CROSS_HALF_WIDTH = 0.34
CAPSULE_HALF_HEIGHT = 0.5
CAPSULE_ARC_VERTICES = 10


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)  # (V, 2)


def _star() -> list[np.ndarray]:
    outer = _regular(STAR_POINTS)
    inner = _regular(STAR_POINTS, STAR_INNER_RADIUS, -np.pi / 2 + np.pi / STAR_POINTS)
    tips = [np.stack([outer[i], inner[i], inner[i - 1]]) for i in range(STAR_POINTS)]
    return [inner, *tips]


def _capsule() -> list[np.ndarray]:
    r = CAPSULE_HALF_HEIGHT
    cx = 1.0 - r
    right = np.linspace(-np.pi / 2, np.pi / 2, CAPSULE_ARC_VERTICES)
    left = right + np.pi
    pts = [(cx + r * np.cos(a), r * np.sin(a)) for a in right] + [(-cx + r * np.cos(a), r * np.sin(a)) for a in left]
    return [np.array(pts)]


def _cross() -> list[np.ndarray]:
    w = CROSS_HALF_WIDTH
    return [
        np.array([[-1, -w], [1, -w], [1, w], [-1, w]], dtype=np.float64),
        np.array([[-w, -1], [w, -1], [w, 1], [-w, 1]], dtype=np.float64),
    ]


SHAPES: dict[str, list[np.ndarray]] = {
    "circle": [_regular(CIRCLE_VERTICES)],
    "square": [np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])],
    "triangle": [_regular(3, 1.0) + np.array([0.0, 0.2])],
    "diamond": [np.array([[0.0, -1.0], [0.7, 0.0], [0.0, 1.0], [-0.7, 0.0]])],
    "star": _star(),
    "hexagon": [_regular(6, 1.0, 0.0)],
    "cross": _cross(),
    "capsule": _capsule(),
}


@dataclass(frozen=True)
class SynthClass:
    name: str
    shape: str  # key of SHAPES
    hue: float  # degrees, centre of the colour family
    sound: str  # key of sound.SOUND_KINDS
    params: dict[str, float] = field(default_factory=dict)
    description: str = ""


# Hues are >= 30 degrees apart; sounds occupy different bands / temporal patterns.
SYNTH_CLASSES: tuple[SynthClass, ...] = (
    SynthClass("beeper", "circle", 0.0, "tone", {"freq": 1000.0}, "steady 1 kHz sine"),
    SynthClass("organ", "square", 225.0, "harmonic", {"freq": 165.0, "harmonics": 8.0}, "165 Hz harmonic stack (8 partials, 1/k)"),
    SynthClass("siren", "triangle", 120.0, "sweep", {"low": 600.0, "high": 2400.0, "rate": 3.0}, "log sweeps 600->2400 Hz, 3 per second"),
    SynthClass("hiss", "diamond", 58.0, "noise_band", {"low": 4000.0, "high": 7000.0}, "band noise 4-7 kHz"),
    SynthClass("ticker", "star", 315.0, "pulses", {"rate": 12.0, "decay": 0.004}, "broadband clicks, 12 per second"),
    SynthClass("tremolo", "hexagon", 185.0, "am_tone", {"freq": 2800.0, "rate": 7.0}, "2.8 kHz sine, amplitude-modulated at 7 Hz"),
    SynthClass("rumble", "cross", 30.0, "noise_band", {"low": 150.0, "high": 450.0}, "band noise 150-450 Hz"),
    SynthClass("warble", "capsule", 270.0, "trill", {"low": 500.0, "high": 700.0, "rate": 6.0}, "trill alternating 500/700 Hz, 6 per second"),
)  # fmt: skip

MIN_CLASSES, MAX_CLASSES = 6, len(SYNTH_CLASSES)


def shape_parts(shape: str, center: np.ndarray, size: float, angle: float) -> list[np.ndarray]:
    """Convex parts (each (V, 2)) of a shape of bounding size `size` px at `center`, rotated."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return [part @ rot.T * (size / 2.0) + center for part in SHAPES[shape]]
