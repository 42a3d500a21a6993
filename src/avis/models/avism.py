"""AVISM: backbone -> pixel decoder -> frame decoder (audio-guided) -> video module.

Letters: B clips, T frames per clip, t frames of one inference chunk, N = B*T frames
(clip-major, index b*T + t), D audio size, Hp x Wp padded input size (multiple of the size
divisibility), Hm x Wm = Hp/4 x Wp/4, fQ frame queries, cQ video queries, C hidden size,
Cm mask-embedding size, Lf frame-query layers, Lv video-decoder layers, K classes.

The model takes frames as RGB 0..255, zero-padded bottom/right; it normalises them with its
pixel mean/std buffers and re-zeroes the padding (the official code pads after normalising).
Loss and post-processing live outside: see ``avis.losses`` and ``avis.inference``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import Tensor, nn

from avis.models.config import AVISMConfig
from avis.models.frame_decoder import FrameDecoder, FrameDecoderOutput, PilotQueries, SlotCarry
from avis.models.outputs import AVISMOutput, FrameOutput, VideoOutput
from avis.models.pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderOutput
from avis.models.spatial_audio import SpatialAudioTerm
from avis.models.video_module import VideoModule, VideoModuleOutput, video_masks

FEATURE_NAMES = ("res2", "res3", "res4", "res5")  # backbone maps, stride ascending
MASK_STRIDE = 4  # input pixels per mask-feature column


@dataclass
class ChunkEncoding:
    """What inference keeps from one chunk of frames."""

    mask_features: Tensor  # (t, Cm, Hm, Wm) the video module's mask features (2 Cm: track_spatial)
    frame_queries: Tensor | None  # (t, fQ, C) last-layer frame queries (None if not asked)
    frame: FrameDecoderOutput | None  # full frame-decoder output (None if not asked)
    stride4_features: Tensor  # (t, C_pix, Hm, Wm) pixel decoder's stride-4 map
    carry: SlotCarry | None = None  # the chunk's last frame's slots (``carry_slots`` models)


class AVISM(nn.Module):
    """The AVISM model. Parts are built by the caller (see ``build_avism``)."""

    # non-persistent buffers (1, 3, 1, 1), registered in __init__
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        pixel_decoder: MSDeformAttnPixelDecoder,
        frame_decoder: FrameDecoder,
        video_module: VideoModule,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int,
        last_layer_num: int,
        instance_embed: tuple[int, int] | None = None,
        spatial_audio: SpatialAudioTerm | None = None,
        track_spatial: bool = False,
        carry_slots: bool = False,
    ) -> None:
        """``instance_embed`` = (mask_dim, E): an avis option, a 1x1 conv from the mask features
        to E-dim per-pixel instance embeddings for the discriminative loss (training only; see
        avis.losses.embedding). None = the official model.

        ``spatial_audio``: an avis option, the mask-feature term of where the sound comes from
        (avis.models.spatial_audio). Each frame's audio vector then ends with the flattened
        (bands x positions) map: audio (.., D + B*P).

        ``track_spatial`` (an avis option, with ``spatial_audio`` and per-frame mask embeddings):
        a track reads the video module's spatial term with one embedding for the whole video
        (the mean of its per-frame ones) instead of frame t's. Which bands a track follows,
        and so which of two look-alikes' sounds, then cannot change from frame to frame:

            logit_t = e_t . F_t + mean_s(e_s) . S_t    (F_t mask features, S_t spatial term)

        Exactly that product is the plain ``video_masks`` product of the concatenated
        embeddings [e_t, mean_s e_s] (.., 2 Cm) and features [F_t, S_t] (N, 2 Cm, Hm, Wm),
        which is how the model hands them to the loss and to every inference path.

        ``carry_slots`` (an avis option): the frame decoder reads a clip's frames in order and
        each frame's slots start where the previous frame's were (``FrameDecoder.forward``'s
        ``carry``); inference hands the state from chunk to chunk (``encode_chunk``'s ``carry``)."""
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.frame_decoder = frame_decoder
        self.video_module = video_module
        self.size_divisibility = size_divisibility
        self.last_layer_num = last_layer_num
        self.instance_embed = None if instance_embed is None else nn.Conv2d(*instance_embed, 1)
        self.spatial_audio = spatial_audio
        if track_spatial and (spatial_audio is None or not video_module.per_frame_mask_embed):
            raise ValueError(
                "spatial_audio_track needs spatial_audio_bands/bins (a spatial_audio term) and "
                "per-frame mask embeddings (per_frame_mask_embed)"
            )
        if track_spatial and video_module.peak_prior is not None:
            raise ValueError("spatial_audio_track does not combine with the peak prior (peak_prior)")
        self.track_spatial = track_spatial
        if carry_slots and frame_decoder.pilot_label_embed is not None:
            raise ValueError("carry_slots does not combine with mask pilots (mask_pilots)")
        self.carry_slots = carry_slots
        # not in the state dict, like the official non-persistent buffers
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, -1, 1, 1), persistent=False
        )

    @property
    def mask_pilots(self) -> bool:
        """Whether training passes mask-pilot queries to forward (the ``mask_pilots`` option)."""
        return self.frame_decoder.pilot_label_embed is not None

    # ------------------------------------------------------------------ inputs
    def normalize(self, frames: Tensor, image_sizes: Sequence[tuple[int, int]]) -> Tensor:
        """frames (B, T, 3, Hp, Wp) 0..255 -> normalised (B*T, 3, Hp, Wp), zero outside image_sizes."""
        b, t = frames.shape[:2]
        x = (frames.flatten(0, 1).float() - self.pixel_mean) / self.pixel_std
        x = x.view(b, t, *x.shape[1:])
        for i, (h, w) in enumerate(image_sizes):
            x[i, :, :, h:, :] = 0
            x[i, :, :, :, w:] = 0
        return x.flatten(0, 1)

    def _check_frames(self, frames: Tensor) -> None:
        hp, wp = frames.shape[-2:]
        div = self.size_divisibility
        if div > 1 and (hp % div or wp % div):
            raise ValueError(
                f"frames must be padded to a multiple of {div}, got {hp}x{wp} "
                "(use avis.inference.pad_frames)"
            )

    def backbone_features(
        self, frames: Tensor, image_sizes: Sequence[tuple[int, int]]
    ) -> dict[str, Tensor]:
        """frames (B, T, 3, Hp, Wp) 0..255 -> backbone maps res2..res5 (B*T, C_k, Hp/s, Wp/s)."""
        self._check_frames(frames)
        return self.backbone(self.normalize(frames, image_sizes))

    # ------------------------------------------------------------------ training / full forward
    def forward(
        self,
        frames: Tensor,
        audio: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        pilots: PilotQueries | None = None,
    ) -> AVISMOutput:
        """frames (B, T, 3, Hp, Wp) float 0..255 zero-padded; audio (B, T, D); image_sizes [(h, w)] * B.

        In training mode the frame decoder hands ``last_layer_num`` layers of frame queries
        to the video module (Lf = last_layer_num), in eval mode one. ``pilots``: the frame
        decoder's mask-pilot queries of the B*T frames (training, ``mask_pilots`` models).
        """
        if frames.dim() != 5 or audio.dim() != 3 or frames.shape[:2] != audio.shape[:2]:
            raise ValueError(
                f"expected frames (B, T, 3, Hp, Wp) and audio (B, T, D) with the same B, T; "
                f"got {tuple(frames.shape)} and {tuple(audio.shape)}"
            )
        if len(image_sizes) != frames.shape[0]:
            raise ValueError(f"got {len(image_sizes)} image sizes for {frames.shape[0]} clips")
        widths = [w for _, w in image_sizes]
        return self.forward_features(self.backbone_features(frames, image_sizes), audio, pilots, widths)

    def forward_features(
        self,
        features: Mapping[str, Tensor],
        audio: Tensor,
        pilots: PilotQueries | None = None,
        image_widths: Sequence[int] | None = None,
    ) -> AVISMOutput:
        """Everything after the backbone: features res2..res5 (B*T, C_k, h_k, w_k), audio (B, T, D);
        image_widths (B,): the clips' unpadded widths (needed by ``spatial_audio`` models)."""
        audio, spatial = self.split_audio(audio)
        b, t, _ = audio.shape
        widths = None if image_widths is None else [w for w in image_widths for _ in range(t)]
        flat = None if spatial is None else spatial.flatten(0, 1)
        pix = self.decode_pixels(features, flat, widths)
        multi_scale, frame_mask_features, video_term, cols = self._with_spatial(pix, flat, widths)
        layers = self.last_layer_num if self.training else 1
        frame, _ = self.decode_frames(
            multi_scale, frame_mask_features, audio.flatten(0, 1), t, layers, True, pilots
        )
        video = self.with_track_embed(self.video_module(self._handed_over(frame, cols), audio))
        base = self.video_module.mask_features(pix.stride4_features, audio.flatten(0, 1))
        mask_features = self.video_mask_features(base, video_term)  # (B*T, Cm [x2], Hm, Wm)
        pixel_embed = None
        if self.instance_embed is not None:
            # the term added, as the plain spatial model reads it (track_spatial keeps it beside)
            summed = base + video_term if self.track_spatial and video_term is not None else mask_features
            pixel_embed = torch.stack(
                [self.instance_embed(frame_mask_features), self.instance_embed(summed)]
            )  # (2, B*T, E, Hm, Wm)
            pixel_embed = pixel_embed.view(2, b, t, *pixel_embed.shape[2:])
        mask_features = mask_features.view(b, t, *mask_features.shape[1:])
        return AVISMOutput(
            frame=FrameOutput(
                pred_logits=frame.pred_logits,
                pred_masks=frame.pred_masks,
                frame_queries=frame.frame_queries,
                pilot_logits=frame.pilot_logits,
                pilot_masks=frame.pilot_masks,
            ),
            video=VideoOutput(
                pred_logits=video.pred_logits,
                pred_mask_embed=video.pred_mask_embed,
                pred_masks=video_masks(
                    video.pred_mask_embed,
                    mask_features,
                    self.video_module.per_frame_mask_embed,
                    self.video_module.peak_prior,
                ),
                pred_fq_embed=video.pred_fq_embed,
                pred_cq_embed=video.pred_cq_embed,
                pred_quality=video.pred_quality,
                mask_features=mask_features,
            ),
            pixel_embed=pixel_embed,
        )

    # ------------------------------------------------------------------ inference pieces
    def encode_chunk(
        self,
        frames: Tensor,
        audio: Tensor,
        image_size: tuple[int, int],
        with_queries: bool = True,
        carry: SlotCarry | None = None,
    ) -> ChunkEncoding:
        """One chunk of a video: frames (t, 3, Hp, Wp) 0..255, audio (t, D), unpadded (h, w);
        ``carry``: the previous chunk's ``ChunkEncoding.carry`` (``carry_slots`` models)."""
        features = self.backbone_features(frames.unsqueeze(0), [image_size])
        return self.encode_chunk_features(features, audio, with_queries, image_size[1], carry)

    def encode_chunk_features(
        self,
        features: Mapping[str, Tensor],
        audio: Tensor,
        with_queries: bool = True,
        image_width: int | None = None,
        carry: SlotCarry | None = None,
    ) -> ChunkEncoding:
        """Like ``encode_chunk`` from backbone maps res2..res5 (t, C_k, h_k, w_k), audio (t, D);
        image_width: the unpadded width (needed by ``spatial_audio`` models).

        Without queries only the pixel decoder runs (what the mask pass of inference needs).
        """
        audio, spatial = self.split_audio(audio)
        widths = None if image_width is None else [image_width] * len(audio)
        pix = self.decode_pixels(features, spatial, widths)
        multi_scale, frame_mask_features, video_term, cols = self._with_spatial(pix, spatial, widths)
        base = self.video_module.mask_features(pix.stride4_features, audio)
        mask_features = self.video_mask_features(base, video_term)  # (t, Cm [x2], Hm, Wm)
        frame = None
        if with_queries:  # inference: full-size masks of the last prediction only (Dl = 1)
            frame, carry = self.decode_frames(
                multi_scale, frame_mask_features, audio, len(audio), 1, False, carry=carry
            )
        return ChunkEncoding(
            mask_features=mask_features,
            frame_queries=None if frame is None else self._handed_over(frame, cols)[-1],
            frame=frame,
            stride4_features=pix.stride4_features,
            carry=carry if with_queries else None,
        )

    def decode_frames(
        self,
        multi_scale: Sequence[Tensor],  # nL x (N, C, h_l, w_l)
        mask_features: Tensor,  # (N, Cm, Hm, Wm)
        audio: Tensor,  # (N, D)
        num_frames: int,  # T: N = B*T, clip-major
        layers: int,
        all_layer_masks: bool,
        pilots: PilotQueries | None = None,
        carry: SlotCarry | None = None,  # (B,) the frames before each clip's first
    ) -> tuple[FrameDecoderOutput, SlotCarry | None]:
        """The frame decoder over B clips of T frames: all frames at once, or with
        ``carry_slots`` frame by frame in order, each frame's slots starting from the previous
        one's (the first frame from ``carry``, None = a clip's start). Returns the output for
        the N frames and the carry of each clip's last frame (None without ``carry_slots``)."""
        if not self.carry_slots:
            return self.frame_decoder(
                multi_scale, mask_features, audio, layers, all_layer_masks, pilots
            ), None
        steps = []
        first = torch.arange(0, mask_features.shape[0], num_frames, device=mask_features.device)
        for step in range(num_frames):
            index = first + step  # (B,) frame `step` of every clip
            out = self.frame_decoder(
                [x[index] for x in multi_scale], mask_features[index], audio[index],
                layers, all_layer_masks, carry=carry,
            )
            steps.append(out)
            carry = SlotCarry.of(out)

        def merged(parts: list[Tensor], dim: int) -> Tensor:  # frames of one step -> clip-major N
            return torch.stack(parts, dim + 1).flatten(dim, dim + 1)

        return FrameDecoderOutput(
            pred_logits=merged([o.pred_logits for o in steps], 1),
            pred_masks=merged([o.pred_masks for o in steps], 1),
            frame_queries=merged([o.frame_queries for o in steps], 1),
            audio_fusion=merged([o.audio_fusion for o in steps], 1),
        ), carry

    def split_audio(self, audio: Tensor) -> tuple[Tensor, Tensor | None]:
        """audio (..., D [+ B*P]) -> the per-frame features (..., D) and, for ``spatial_audio``
        models, the flattened maps of where the sound is (..., B*P)."""
        if self.spatial_audio is None:
            return audio, None
        extra = self.spatial_audio.dim
        if audio.shape[-1] <= extra:
            raise ValueError(
                f"this model reads where the sound is: each frame's audio must end with the "
                f"{extra} values of its spatial map (avis.audio.spatial), got {audio.shape[-1]} values"
            )
        return audio[..., :-extra], audio[..., -extra:]

    def decode_pixels(
        self, features: Mapping[str, Tensor], spatial: Tensor | None, widths: Sequence[int] | None
    ) -> PixelDecoderOutput:
        """The pixel decoder over backbone maps res2..res5 (N, C_k, h_k, w_k); with
        ``spatial_audio_early`` the maps (N, B*P) of where the sound is, projected at each
        encoder level's columns, join its encoder inputs (widths (N,): unpadded, in pixels)."""
        maps = [features[name] for name in FEATURE_NAMES]
        term = self.spatial_audio
        if term is None or term.early_proj is None or spatial is None:
            return self.pixel_decoder(maps)
        if widths is None:
            raise ValueError("this model reads where the sound is: pass the pictures' widths")
        padded_width = maps[0].shape[-1] * MASK_STRIDE  # res2 has the mask grid's stride
        encoder_maps = self.pixel_decoder.encoder_inputs(maps)
        early = self._column_terms(encoder_maps, spatial, widths, padded_width, "early")
        return self.pixel_decoder(maps, early)

    def _with_spatial(
        self, pix: PixelDecoderOutput, spatial: Tensor | None, widths: Sequence[int] | None
    ) -> tuple[list[Tensor], Tensor, Tensor | None, Tensor | None]:
        """What the decoders read, with where the sound is for ``spatial_audio`` models:
        spatial (N, B*P) maps of frames `widths` (N,) pixels wide -> the multi-scale maps, the
        frame decoder's mask features, the term for the video module's and the map at each
        mask-grid column (N, B, Wm) (both None without)."""
        if spatial is None:
            return list(pix.multi_scale_features), pix.mask_features, None, None
        if widths is None:
            raise ValueError("this model reads where the sound is: pass the pictures' widths")
        grid_width = pix.mask_features.shape[-1]
        cols, frame_term, video_term = self.spatial_terms(spatial, widths, grid_width)
        multi_scale = self.spatial_keys(pix.multi_scale_features, spatial, widths, grid_width)
        return multi_scale, pix.mask_features + frame_term, video_term, cols

    def spatial_terms(
        self, spatial: Tensor, widths: Sequence[int], grid_width: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Flattened maps (N, B*P) of frames `widths` (N,) pixels wide -> the map at each column
        of the mask grid (N, B, Wm) and the terms (N, Cm, 1, Wm) added to the frame decoder's and
        the video module's mask features (``spatial_audio``)."""
        term = self.spatial_audio
        assert term is not None, "only spatial_audio models have the term"
        cols = term.columns(spatial, widths, grid_width, MASK_STRIDE)
        return cols, term(cols, "frame"), term(cols, "video")

    def spatial_keys(
        self, maps: Sequence[Tensor], spatial: Tensor, widths: Sequence[int], grid_width: int
    ) -> list[Tensor]:
        """The multi-scale maps (N, C, h_l, w_l) the frame decoder attends to, plus the spatial
        term's key projection at each level's columns (``spatial_audio_keys``; else unchanged)."""
        term = self.spatial_audio
        if term is None or term.key_proj is None:
            return list(maps)
        terms = self._column_terms(maps, spatial, widths, grid_width * MASK_STRIDE, "key")
        return [x + t for x, t in zip(maps, terms)]

    def _column_terms(
        self, maps: Sequence[Tensor], spatial: Tensor, widths: Sequence[int], padded_width: int, which: str
    ) -> list[Tensor]:
        """The spatial term's projection `which` ("key", "early") of the maps (N, B*P) read at the
        columns of each of `maps` (N, C, h_l, w_l) of pictures padded to `padded_width` pixels
        (`widths` (N,) unpadded) -> one (N, C, 1, w_l) per map."""
        term = self.spatial_audio
        assert term is not None, "only spatial_audio models have the term"
        return [
            term(term.columns(spatial, widths, x.shape[-1], padded_width // x.shape[-1]), which)
            for x in maps
        ]

    def _handed_over(self, frame: FrameDecoderOutput, cols: Tensor | None = None) -> Tensor:
        """The frame queries the video module reads: (Lf, N, fQ, C); with ``position_cues``
        plus the embedding of where their masks lie, with ``spatial_audio_cues`` plus that of
        the bands sounding under them (cols (N, B, Wm): the spatial map at each mask-grid
        column; the masks are those of the same predictions)."""
        queries = frame.frame_queries
        masks = frame.pred_masks[-queries.shape[0] :]
        if self.video_module.position_cues:
            queries = self.video_module.add_position_cues(queries, masks)
        if self.spatial_audio is not None and self.spatial_audio.cue_embed is not None:
            assert cols is not None, "spatial_audio models always have the maps (split_audio)"
            queries = queries + self.spatial_audio.token_cues(cols, masks).to(queries.dtype)
        return queries

    def decode_video(self, frame_queries: Tensor, audio: Tensor) -> VideoModuleOutput:
        """The video module once over a whole video: frame_queries (T, fQ, C), audio (T, D)."""
        video = self.video_module(frame_queries.unsqueeze(0), self.split_audio(audio)[0].unsqueeze(0))
        return self.with_track_embed(video)

    def video_mask_features(self, base: Tensor, video_term: Tensor | None) -> Tensor:
        """The features the video masks are read from: base (N, Cm, Hm, Wm) plus the spatial
        term (N, Cm, 1, Wm) when the model has one; ``track_spatial``: the two side by side,
        (N, 2 Cm, Hm, Wm), to be read with ``with_track_embed``'s embeddings."""
        if video_term is None:
            return base
        if not self.track_spatial:
            return base + video_term
        return torch.cat([base, video_term.expand(-1, -1, base.shape[-2], -1)], dim=1)

    def with_track_embed(self, video: VideoModuleOutput) -> VideoModuleOutput:
        """``track_spatial``: per-frame mask embeddings (.., cQ, T, Cm) -> (.., cQ, T, 2 Cm),
        each frame's beside the track's mean over the T frames (unchanged without the option)."""
        if not self.track_spatial:
            return video
        embed = video.pred_mask_embed
        track = embed.mean(dim=-2, keepdim=True).expand_as(embed)
        return replace(video, pred_mask_embed=torch.cat([embed, track], dim=-1))


def build_avism(cfg: AVISMConfig) -> AVISM:
    """Build the model described by ``cfg`` (random weights)."""
    from avis.models.backbones import build_backbone

    backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
    # every backbone of BACKBONES has out_channels: dict[str, int]
    out_channels = cast("Mapping[str, int]", backbone.out_channels)
    return build_avism_with_backbone(cfg, backbone, [out_channels[n] for n in FEATURE_NAMES])


def build_avism_with_backbone(
    cfg: AVISMConfig, backbone: nn.Module, in_channels: Sequence[int]
) -> AVISM:
    """Build the model around a given backbone with output channels ``in_channels`` (res2..res5)."""
    pixel_decoder = MSDeformAttnPixelDecoder(
        list(in_channels),
        conv_dim=cfg.conv_dim,
        mask_dim=cfg.mask_dim,
        num_encoder_layers=cfg.pixel_decoder_layers,
        num_heads=cfg.pixel_decoder_heads,
        num_points=cfg.pixel_decoder_points,
        ffn_dim=cfg.pixel_decoder_ffn_dim,
        num_groups=cfg.norm_groups,
        dropout=cfg.dropout,
        coord_freqs=cfg.coord_freqs,
    )
    frame_decoder = FrameDecoder(
        in_channels=cfg.conv_dim,
        hidden_dim=cfg.frame_hidden_dim,
        num_queries=cfg.frame_queries,
        num_classes=cfg.num_classes,
        nheads=cfg.frame_heads,
        dim_feedforward=cfg.frame_ffn_dim,
        dec_layers=cfg.frame_dec_layers,
        mask_dim=cfg.mask_dim,
        audio_dim=cfg.audio_dim,
        pre_norm=cfg.frame_pre_norm,
        enforce_input_proj=cfg.frame_enforce_input_proj,
        dropout=cfg.dropout,
        anchor_queries=cfg.anchor_queries,
        query_selection=cfg.query_selection,
        mask_pilots=cfg.mask_pilots,
    )
    video_module = VideoModule(
        frame_dim=cfg.frame_hidden_dim,
        hidden_dim=cfg.video_hidden_dim,
        num_heads=cfg.video_heads,
        dim_feedforward=cfg.video_ffn_dim,
        num_frame_queries=cfg.frame_queries,
        num_queries=cfg.video_queries,
        enc_layers=cfg.video_enc_layers,
        dec_layers=cfg.video_dec_layers,
        window_size=cfg.window_size,
        num_classes=cfg.num_classes,
        audio_dim=cfg.audio_dim,
        mask_in_dim=cfg.conv_dim,
        mask_dim=cfg.mask_dim,
        pre_norm=cfg.video_pre_norm,
        enforce_input_proj=cfg.video_enforce_input_proj,
        use_sim=cfg.use_sim,
        sim_use_clip=cfg.sim_use_clip,
        audio_mask_bias=cfg.audio_mask_bias,
        per_frame_mask_embed=cfg.per_frame_mask_embed,
        recurrent_refine=cfg.recurrent_refine,
        refine_by_content=cfg.refine_by_content,
        consensus_refine=cfg.consensus_refine,
        mask_quality=cfg.mask_quality,
        anchor_queries=cfg.anchor_queries,
        position_cues=cfg.position_cues,
        peak_prior=cfg.peak_prior,
    )
    spatial = None
    if cfg.spatial_audio_bands > 0 or cfg.spatial_audio_bins > 0:
        if cfg.spatial_audio_bands < 1 or cfg.spatial_audio_bins < 2:
            raise ValueError(
                "spatial_audio_bands >= 1 and spatial_audio_bins >= 2 together, or both 0; got "
                f"{cfg.spatial_audio_bands} and {cfg.spatial_audio_bins}"
            )
        key_dim = cfg.conv_dim if cfg.spatial_audio_keys else 0
        cue_dim = cfg.frame_hidden_dim if cfg.spatial_audio_cues else 0
        early_dim = cfg.conv_dim if cfg.spatial_audio_early else 0
        spatial = SpatialAudioTerm(
            cfg.spatial_audio_bands, cfg.spatial_audio_bins, cfg.mask_dim, key_dim, cue_dim, early_dim
        )
    elif cfg.spatial_audio_cues or cfg.spatial_audio_early:
        option = "spatial_audio_cues" if cfg.spatial_audio_cues else "spatial_audio_early"
        raise ValueError(f"{option} needs spatial_audio_bands and spatial_audio_bins")
    return AVISM(
        backbone,
        pixel_decoder,
        frame_decoder,
        video_module,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
        size_divisibility=cfg.size_divisibility,
        last_layer_num=cfg.last_layer_num,
        instance_embed=(cfg.mask_dim, cfg.instance_embed_dim) if cfg.instance_embed_dim > 0 else None,
        spatial_audio=spatial,
        track_spatial=cfg.spatial_audio_track,
        carry_slots=cfg.carry_slots,
    )
