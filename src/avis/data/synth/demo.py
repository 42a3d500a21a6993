"""One short synthetic video for the embedded demo: frames, soundtrack, mp4 and its ground truth.

    <out>/demo.json                                  AVISeg annotations of the one video
    <out>/demo/JPEGImages/demo_0000/<t:05d>.jpg       1 fps frames
    <out>/demo/WAVAudios/demo_0000.wav
    <out>/demo/FEATAudios/demo_0000.npy
    <out>/demo/MP4/demo_0000.mp4                      H.264 at `fps` + AAC soundtrack
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from avis.data.split import FEAT_DIR, FRAMES_DIR, WAV_DIR
from avis.data.synth.config import SynthConfig
from avis.data.synth.writer import MP4_DIR, _jobs, make_video, split_json

DEMO_SPLIT = "demo"
DEMO_FRAMES = 12
DEMO_FPS = 8


@dataclass(frozen=True)
class DemoVideo:
    root: Path  # AVISeg-layout root holding the split "demo"
    split: str
    mp4: Path
    wav: Path
    features: Path
    frames_dir: Path
    annotations: Path


def make_demo_video(
    out_dir: Path | str,
    *,
    seed: int = 0,
    num_frames: int = DEMO_FRAMES,
    fps: int = DEMO_FPS,
    config: SynthConfig | None = None,
) -> DemoVideo:
    """Write one synthetic video of `num_frames` seconds (deterministic from seed)."""
    cfg = replace(config or SynthConfig(), min_frames=num_frames, max_frames=num_frames)
    out = Path(out_dir)
    (job,) = _jobs(out, DEMO_SPLIT, 1, seed, cfg, fps)
    result = make_video(job)
    annotations = out / f"{DEMO_SPLIT}.json"
    annotations.write_text(json.dumps(split_json([result], cfg, seed, DEMO_SPLIT), sort_keys=True, separators=(",", ":")), encoding="utf-8")
    split_dir = out / DEMO_SPLIT
    return DemoVideo(
        root=out, split=DEMO_SPLIT, mp4=split_dir / MP4_DIR / f"{job.name}.mp4",
        wav=split_dir / WAV_DIR / f"{job.name}.wav", features=split_dir / FEAT_DIR / f"{job.name}.npy",
        frames_dir=split_dir / FRAMES_DIR / job.name, annotations=annotations,
    )  # fmt: skip
