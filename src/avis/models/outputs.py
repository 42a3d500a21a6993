"""Typed outputs of the AVISM model in training mode (what the losses consume).

Letters: B clips, T frames per clip, fQ frame queries, cQ video queries, C hidden size,
K classes (+1 = "no object"), Dl = frame-decoder predictions (initial queries + one per layer),
Lf = frame-query layers handed to the video module (LAST_LAYER_NUM in training, 1 at test),
Lv = video-decoder layers, Hm x Wm = stride-4 grid of the padded input (Hp/4, Wp/4).
Frame-level tensors put the B*T frames clip-major: index b*T + t.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class FrameOutput:
    """Per-frame Mask2Former-style predictions of the frame-level decoder."""

    pred_logits: Tensor  # (Dl, B*T, fQ, K+1); index -1 = last layer
    pred_masks: Tensor  # (Dl, B*T, fQ, Hm, Wm) mask logits
    frame_queries: Tensor  # (Lf, B*T, fQ, C) normalised decoder outputs (object-context tokens)
    pilot_logits: Tensor | None = None  # (Dl, B*T, G, K+1) of the mask-pilot queries, if given
    pilot_masks: Tensor | None = None  # (Dl, B*T, G, Hm, Wm)


@dataclass
class VideoOutput:
    """Predictions of the video-level module, one track per video query."""

    pred_logits: Tensor  # (Lv, Lf, B, cQ, K+1); index -1 = last video-decoder layer
    pred_mask_embed: Tensor  # (Lv, Lf, B, cQ, C)
    pred_masks: Tensor  # (Lv, Lf, B, cQ, T, Hm, Wm) mask logits = embed . video mask features
    pred_fq_embed: Tensor | None  # (Lf, B, T, fQ, C) sim_embed_frame(frame queries); None without use_sim
    pred_cq_embed: Tensor | None  # (Lv, Lf, B, cQ, C) sim_embed_clip(video queries); None without sim_use_clip
    pred_quality: Tensor | None = None  # (Lv, Lf, B, cQ) predicted mask-IoU logits (mask_quality)
    mask_features: Tensor | None = None  # (B, T, Cm [x2], Hm, Wm) the features pred_masks read


@dataclass
class AVISMOutput:
    frame: FrameOutput
    video: VideoOutput
    # models with `instance_embed_dim` E > 0: a 1x1 projection of the frame decoder's and the
    # video module's mask features, (2, B, T, E, Hm, Wm); what the discriminative loss reads
    pixel_embed: Tensor | None = None
