"""The AVISM configuration: every number of the model as a field, and the presets.

``PRESETS`` is a plain dict of functions returning an ``AVISMConfig``:
- ``avism_r50``: the official R50 model (configs/avism/R50/avism_R50_IN.yaml),
- ``avism_swinl``: the official Swin-L model (200 frame queries, test short side 448),
- ``avism_tiny``: a small ResNet-18 model with trainable norms, for CPU training from scratch.

The config is plain data (JSON-friendly); ``avis.models.avism.build_avism(cfg)`` turns it
into modules. Official names of the detectron2 config are given in comments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)
AVISEG_NUM_CLASSES = 26
VGGISH_DIM = 128


@dataclass
class AVISMConfig:
    # --- backbone (MODEL.BACKBONE.NAME + its options, passed to build_backbone)
    backbone: str = "resnet50"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

    # --- inputs
    num_classes: int = AVISEG_NUM_CLASSES  # MODEL.SEM_SEG_HEAD.NUM_CLASSES (K; +1 no-object)
    audio_dim: int = VGGISH_DIM  # one audio vector per frame
    pixel_mean: tuple[float, float, float] = IMAGENET_PIXEL_MEAN  # MODEL.PIXEL_MEAN (RGB)
    pixel_std: tuple[float, float, float] = IMAGENET_PIXEL_STD  # MODEL.PIXEL_STD
    size_divisibility: int = 32  # MODEL.MASK_FORMER.SIZE_DIVISIBILITY

    # --- pixel decoder (MSDeformAttnPixelDecoder)
    conv_dim: int = 256  # MODEL.SEM_SEG_HEAD.CONVS_DIM
    mask_dim: int = 256  # MODEL.SEM_SEG_HEAD.MASK_DIM
    pixel_decoder_layers: int = 6  # MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS
    pixel_decoder_heads: int = 8  # MODEL.MASK_FORMER.NHEADS (the official code reuses it)
    pixel_decoder_points: int = 4  # fixed in the official code
    pixel_decoder_ffn_dim: int = 1024  # fixed in the official code
    norm_groups: int = 32  # GroupNorm groups of the pixel decoder convs
    dropout: float = 0.0  # MODEL.MASK_FORMER.DROPOUT (pixel-decoder encoder + frame decoder)

    # --- frame-level decoder (AVISMMultiScaleMaskedTransformerDecoder)
    frame_hidden_dim: int = 256  # MODEL.MASK_FORMER.HIDDEN_DIM
    frame_heads: int = 8  # MODEL.MASK_FORMER.NHEADS
    frame_ffn_dim: int = 2048  # MODEL.MASK_FORMER.DIM_FEEDFORWARD
    frame_queries: int = 100  # MODEL.MASK_FORMER.NUM_OBJECT_QUERIES (fQ)
    frame_dec_layers: int = 9  # MODEL.MASK_FORMER.DEC_LAYERS - 1
    frame_pre_norm: bool = False  # MODEL.MASK_FORMER.PRE_NORM
    frame_enforce_input_proj: bool = False  # MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ

    # --- video-level module (Avism)
    video_hidden_dim: int = 256  # MODEL.AVISM.HIDDEN_DIM
    video_heads: int = 8  # MODEL.AVISM.NHEADS
    video_ffn_dim: int = 2048  # MODEL.AVISM.DIM_FEEDFORWARD
    video_queries: int = 100  # MODEL.AVISM.NUM_OBJECT_QUERIES (cQ)
    video_enc_layers: int = 6  # MODEL.AVISM.ENC_LAYERS
    video_dec_layers: int = 3  # MODEL.AVISM.DEC_LAYERS
    window_size: int = 6  # MODEL.AVISM.ENC_WINDOW_SIZE (0 = no windows)
    video_pre_norm: bool = False  # MODEL.AVISM.PRE_NORM
    video_enforce_input_proj: bool = True  # MODEL.AVISM.ENFORCE_INPUT_PROJ
    last_layer_num: int = 3  # MODEL.AVISM.LAST_LAYER_NUM (frame-query layers used in training)
    use_sim: bool = True  # MODEL.AVISM.SIM_WEIGHT > 0 (builds sim_embed_frame)
    sim_use_clip: bool = True  # MODEL.AVISM.SIM_USE_CLIP (builds sim_embed_clip)
    audio_mask_bias: bool = False  # avis option: per-frame audio term in the video masks
    per_frame_mask_embed: bool = False  # avis option: video queries re-read each frame
    recurrent_refine: bool = False  # avis option: each frame's re-read starts from the previous one
    refine_by_content: bool = False  # avis option: the per-frame re-read ignores frame-query slots
    consensus_refine: bool = False  # avis option: a second re-read from the mean of the first
    coord_freqs: int = 0  # avis option: > 0 adds embedded pixel coordinates to the pixel maps
    mask_quality: bool = False  # avis option: each video query predicts its track's mask IoU
    anchor_queries: bool = False  # avis option: query position embeddings from fixed anchor points
    position_cues: bool = False  # avis option: frame queries handed over with where their masks lie
    peak_prior: bool = False  # avis option: a radial mask term around each video query's peak
    query_selection: bool = False  # avis option: frame queries start from the frame's best tokens
    instance_embed_dim: int = 0  # avis option: > 0 adds a per-pixel instance-embedding head (training)
    mask_pilots: bool = False  # avis option: training-only mask-pilot queries (frame decoder)
    carry_slots: bool = False  # avis option: each frame's slots start where the previous frame's lay
    # avis option: (bands, positions) > 0 adds where the sound is to the mask features
    # (avis.models.spatial_audio); each frame's audio then ends with that flattened map
    spatial_audio_bands: int = 0
    spatial_audio_bins: int = 0
    spatial_audio_keys: bool = False  # ... and to the maps the frame decoder's queries attend to
    # ... and the video masks read it with a track-level embedding (needs per_frame_mask_embed)
    spatial_audio_track: bool = False
    # ... and each frame query is handed to the video module with the bands sounding under its mask
    spatial_audio_cues: bool = False
    # ... and to the pixel decoder's encoder inputs, before its deformable attention (early fusion)
    spatial_audio_early: bool = False

    # --- inference
    test_run_chunk_size: int = 18  # MODEL.AVISM.TEST_RUN_CHUNK_SIZE (frames per encoder chunk)
    test_interpolate_chunk_size: int = 5  # MODEL.AVISM.TEST_INTERPOLATE_CHUNK_SIZE
    top_k: int = 100  # TEST.DETECTIONS_PER_IMAGE
    score_threshold: float = 0.3  # keep instances with class prob x mask score above this
    mask_prob_threshold: float = 0.5  # pixels counted by the mask score (sigmoid > this)
    test_short_side: int = 360  # INPUT.MIN_SIZE_TEST
    test_max_size: int = 1333  # INPUT.MAX_SIZE_TEST
    split_components: bool = False  # avis option: one track per separate blob (inference/components.py)
    split_min_blob_fraction: float = 0.2  # blobs smaller than this x the frame's largest are specks
    split_min_frame_share: float = 0.25  # k tracks if >= this share of frames have >= k blobs

    @property
    def spatial_audio(self) -> bool:
        """Whether the model reads where the sound is (avis.models.spatial_audio)."""
        return self.spatial_audio_bands > 0

    @property
    def input_audio_dim(self) -> int:
        """Values per frame of the model's audio input: D, plus bands x positions of the
        flattened spatial map for ``spatial_audio`` models."""
        return self.audio_dim + self.spatial_audio_bands * self.spatial_audio_bins

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AVISMConfig:
        """Rebuild a config from ``to_dict`` output; unknown fields are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown AVISMConfig fields {unknown}")
        values = dict(data)
        for name in ("pixel_mean", "pixel_std"):
            if name in values:
                values[name] = tuple(float(v) for v in values[name])
        if "backbone_kwargs" in values:
            values["backbone_kwargs"] = dict(values["backbone_kwargs"])
        return cls(**values)


# fields that change how predictions are post-processed, not the weights' meaning
INFERENCE_FIELDS = tuple(
    f.name for f in fields(AVISMConfig) if f.name.startswith(("test_", "split_"))
) + ("top_k", "score_threshold", "mask_prob_threshold")


def avism_r50() -> AVISMConfig:
    """Official AVISM R50 (ImageNet or COCO initialisation: same architecture)."""
    return AVISMConfig(backbone="resnet50", backbone_kwargs={"norm": "FrozenBN"})


def avism_swinl() -> AVISMConfig:
    """Official AVISM Swin-L: 200 frame queries, test short side 448."""
    return AVISMConfig(
        backbone="swin_large",
        backbone_kwargs={},
        frame_queries=200,
        test_short_side=448,
    )


def avism_tiny() -> AVISMConfig:
    """A small model that trains from scratch on a CPU (synthetic benchmark, 128x128 frames).

    ResNet-18 with trainable GroupNorm, hidden size 64 everywhere, fewer layers and queries.
    """
    return AVISMConfig(
        backbone="resnet18",
        backbone_kwargs={"norm": "GN"},
        num_classes=8,
        conv_dim=64,
        mask_dim=64,
        pixel_decoder_layers=2,
        pixel_decoder_heads=4,
        pixel_decoder_ffn_dim=256,
        frame_hidden_dim=64,
        frame_heads=4,
        frame_ffn_dim=256,
        frame_queries=20,
        frame_dec_layers=3,
        video_hidden_dim=64,
        video_heads=4,
        video_ffn_dim=256,
        video_queries=10,
        video_enc_layers=2,
        video_dec_layers=3,
        window_size=6,
        top_k=20,
        test_short_side=128,
        test_max_size=256,
    )


# detectron2 config key -> (AVISMConfig field, conversion)
_DETECTRON2_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "MODEL.PIXEL_MEAN": ("pixel_mean", lambda v: tuple(float(x) for x in v)),
    "MODEL.PIXEL_STD": ("pixel_std", lambda v: tuple(float(x) for x in v)),
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": ("size_divisibility", int),
    "MODEL.MASK_FORMER.DROPOUT": ("dropout", float),
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": ("num_classes", int),
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": ("conv_dim", int),
    "MODEL.SEM_SEG_HEAD.MASK_DIM": ("mask_dim", int),
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": ("pixel_decoder_layers", int),
    "MODEL.MASK_FORMER.HIDDEN_DIM": ("frame_hidden_dim", int),
    "MODEL.MASK_FORMER.NHEADS": ("frame_heads", int),
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": ("frame_ffn_dim", int),
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": ("frame_queries", int),
    "MODEL.MASK_FORMER.DEC_LAYERS": ("frame_dec_layers", lambda v: int(v) - 1),
    "MODEL.MASK_FORMER.PRE_NORM": ("frame_pre_norm", bool),
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": ("frame_enforce_input_proj", bool),
    "MODEL.AVISM.HIDDEN_DIM": ("video_hidden_dim", int),
    "MODEL.AVISM.NHEADS": ("video_heads", int),
    "MODEL.AVISM.DIM_FEEDFORWARD": ("video_ffn_dim", int),
    "MODEL.AVISM.NUM_OBJECT_QUERIES": ("video_queries", int),
    "MODEL.AVISM.ENC_LAYERS": ("video_enc_layers", int),
    "MODEL.AVISM.DEC_LAYERS": ("video_dec_layers", int),
    "MODEL.AVISM.ENC_WINDOW_SIZE": ("window_size", int),
    "MODEL.AVISM.PRE_NORM": ("video_pre_norm", bool),
    "MODEL.AVISM.ENFORCE_INPUT_PROJ": ("video_enforce_input_proj", bool),
    "MODEL.AVISM.LAST_LAYER_NUM": ("last_layer_num", int),
    "MODEL.AVISM.SIM_WEIGHT": ("use_sim", lambda v: float(v) > 0.0),
    "MODEL.AVISM.SIM_USE_CLIP": ("sim_use_clip", bool),
    "MODEL.AVISM.TEST_RUN_CHUNK_SIZE": ("test_run_chunk_size", int),
    "MODEL.AVISM.TEST_INTERPOLATE_CHUNK_SIZE": ("test_interpolate_chunk_size", int),
    "TEST.DETECTIONS_PER_IMAGE": ("top_k", int),
    "INPUT.MIN_SIZE_TEST": ("test_short_side", int),
    "INPUT.MAX_SIZE_TEST": ("test_max_size", int),
}


def from_detectron2(values: dict[str, Any], base: AVISMConfig | None = None) -> AVISMConfig:
    """Map flat detectron2 config values (``{"MODEL.AVISM.HIDDEN_DIM": 64, ...}``) onto a config.

    Fields without a key in ``values`` keep the value of ``base`` (default: ``avism_r50()``);
    keys that do not describe the model are ignored. The pixel decoder's head count follows
    ``MODEL.MASK_FORMER.NHEADS`` as in the official code.
    """
    cfg = base if base is not None else avism_r50()
    updates: dict[str, Any] = {}
    for key, (name, convert) in _DETECTRON2_KEYS.items():
        if key in values:
            updates[name] = convert(values[key])
    if "frame_heads" in updates:
        updates["pixel_decoder_heads"] = updates["frame_heads"]
    return replace(cfg, **updates)


PRESETS: dict[str, Callable[[], AVISMConfig]] = {
    "avism_r50": avism_r50,
    "avism_swinl": avism_swinl,
    "avism_tiny": avism_tiny,
}


def get_preset(name: str, **overrides: Any) -> AVISMConfig:
    """The preset ``name`` with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name](), **overrides)
