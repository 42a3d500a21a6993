"""AVISM in plain PyTorch: parts, assembly, presets and checkpoints.

Build a model from a preset: ``build_avism(PRESETS["avism_r50"]())``; load one from a file
(avis or official format): ``model, cfg = load_model(path, preset=...)``.
"""

from avis.models.avism import AVISM, ChunkEncoding, build_avism, build_avism_with_backbone
from avis.models.checkpoint import (
    avis_to_official,
    load_model,
    load_state_dict_strict,
    official_to_avis,
    save_model,
)
from avis.models.config import PRESETS, AVISMConfig, from_detectron2, get_preset
from avis.models.frame_decoder import PilotQueries
from avis.models.outputs import AVISMOutput, FrameOutput, VideoOutput
from avis.models.video_module import VideoModule, VideoModuleOutput

__all__ = [
    "AVISM",
    "PRESETS",
    "AVISMConfig",
    "AVISMOutput",
    "ChunkEncoding",
    "PilotQueries",
    "FrameOutput",
    "VideoModule",
    "VideoModuleOutput",
    "VideoOutput",
    "avis_to_official",
    "build_avism",
    "build_avism_with_backbone",
    "from_detectron2",
    "get_preset",
    "load_model",
    "load_state_dict_strict",
    "official_to_avis",
    "save_model",
]
