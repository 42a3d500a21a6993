"""Knobs of the synthetic benchmark, and presets in a plain dict.

Pixel quantities are given for a 128 x 128 frame and scale with `size`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

REFERENCE_SIZE = 128
# Version of the generator, written into every split JSON as info["avis_synth_version"].
# Raise it whenever the files made for a given (seed, config) change; results measured on one
# version are not comparable with another. Files without the key are version 1 (the generator
# every result up to issue 19 was measured on, docs/synthetic-benchmark.md).
# Version 2 = a stereo scene (`stereo=True`): every instance is its own source, panned to its
# horizontal position, twins at their own pitch; configs without it still make version 1.
SYNTH_VERSION = 2
V2_FIELDS = ("stereo", "twin_detune")  # knobs of version 2, absent from version 1's JSON
VERSION_KEY = "avis_synth_version"
DEFAULT_SEED = 0  # `avis synth`'s seed: the data set the shipped checkpoint was trained on


@dataclass(frozen=True)
class SynthConfig:
    # video
    size: int = 128  # frame height = width, px
    min_frames: int = 10
    max_frames: int = 60
    num_classes: int = 8  # first K classes of SYNTH_CLASSES (6..8)
    # objects
    object_size: tuple[float, float] = (22.0, 44.0)  # bounding size, px at 128
    max_objects: int = 5
    sounding_class_weights: tuple[float, ...] = (0.5, 0.35, 0.15)  # P(1, 2, 3 sounding classes)
    twin_prob: float = 0.25  # a sounding class shows two instances
    distractor_prob: float = 0.45  # P(at least one silent distractor class)
    second_distractor_prob: float = 0.25  # P(a second one | a first one)
    max_classes_per_video: int = 4
    hue_jitter: float = 6.0  # degrees
    # motion (px at 128, per second = per frame)
    speed: float = 3.0  # largest drift speed
    wobble: float = 10.0  # largest amplitude of the smooth wobble
    spin: float = 8.0  # largest rotation speed, degrees per second
    enter_leave_prob: float = 0.2  # per object: it enters or leaves through a border
    # scene
    texture: float = 0.12  # background texture amplitude (fraction of 255)
    pixel_noise: float = 2.0  # std of the (static) per-pixel background noise, 0..255 units
    min_visible_area: float = 12.0  # px at 128: smaller visible parts give a null segmentation
    supersample: int = 4  # anti-aliasing factor of the renderer
    jpeg_quality: int = 92
    # sound
    sample_rate: int = 16000
    silent_fraction: float = 0.075  # expected fraction of frames where nothing sounds
    segment_seconds: tuple[int, int] = (2, 6)  # length range of on/off segments per class
    on_prob: float = 0.65  # P(a segment of a sounding class is on)
    gain: tuple[float, float] = (0.4, 1.0)  # per-segment gain of a source
    freq_jitter: float = 0.03  # relative jitter of a class's frequencies per video
    noise_level: float = 0.004  # std of the background noise (full scale 1)
    # version 2: stereo soundtracks, one source per instance at the instance's horizontal
    # position (level and time differences); the second of two twins is detuned by a factor
    # 1 +- u, u in twin_detune (two guitars playing different notes)
    stereo: bool = False
    twin_detune: tuple[float, float] = (0.12, 0.25)

    def scale(self) -> float:
        return self.size / REFERENCE_SIZE

    @property
    def version(self) -> int:
        """The generator version of the files this config makes (see SYNTH_VERSION)."""
        return 2 if self.stereo else 1

    def to_dict(self) -> dict:
        """The knobs as written into the split JSON (version 1 configs without version 2's)."""
        out = asdict(self)
        if not self.stereo:
            for key in V2_FIELDS:
                out.pop(key)
        return out


PRESETS: dict[str, SynthConfig] = {
    "easy": SynthConfig(),
    "hard": SynthConfig(
        object_size=(16.0, 40.0), max_objects=6, sounding_class_weights=(0.3, 0.4, 0.3),
        twin_prob=0.4, distractor_prob=0.7, speed=5.0, wobble=14.0, texture=0.25,
        enter_leave_prob=0.35, noise_level=0.02, gain=(0.2, 1.0), freq_jitter=0.06,
    ),  # fmt: skip
}
PRESETS["stereo"] = replace(PRESETS["easy"], stereo=True)  # benchmark version 2
PRESETS["hard_stereo"] = replace(PRESETS["hard"], stereo=True)


def preset(name: str, **overrides) -> SynthConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown synth preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
