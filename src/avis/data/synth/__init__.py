"""The synthetic audio-visual benchmark (see docs/synthetic-benchmark.md).

- `generate_dataset(out, seed=..., counts=..., config=..., workers=..., mp4_fps=...)`
- `make_demo_video(out_dir, seed=..., num_frames=..., fps=...) -> DemoVideo`
- `SynthConfig`, `PRESETS`, `preset(name, **overrides)`, `SYNTH_CLASSES`
"""

from avis.data.synth.classes import SYNTH_CLASSES, SynthClass
from avis.data.synth.config import PRESETS, SynthConfig, preset
from avis.data.synth.demo import DemoVideo, make_demo_video
from avis.data.synth.writer import DEFAULT_COUNTS, generate_dataset

__all__ = [
    "DEFAULT_COUNTS",
    "DemoVideo",
    "PRESETS",
    "SYNTH_CLASSES",
    "SynthClass",
    "SynthConfig",
    "generate_dataset",
    "make_demo_video",
    "preset",
]
