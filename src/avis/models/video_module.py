"""The video-level module of AVISM: window attention over the object-context tokens (frame
queries), the audio-visual fusion encoder, and video queries that decode one track each.

Parameter names follow the official ``avism_module.`` layout (``av_proj``, ``enc_self_attn``,
``enc_ffn``, ``enc_av_cross_attn``, ``enc_av_ffn``, ``transformer_*_layers``,
``avism_mask_features``, ``decoder_norm``, ``query_feat``, ``query_embed``, ``fq_pos``,
``input_proj_dec``, ``class_embed``, ``mask_embed``, ``sim_embed_frame``, ``sim_embed_clip``).

Letters: Lf frame-query layers handed over (3 in training, 1 at test), B clips, T frames per
clip, Tp = T padded to a multiple of the window, W window size (frames), Nw = Tp / W windows,
fQ frame queries, cQ video queries, C hidden size, Cm mask-embedding size, D audio size,
K classes (+1 = "no object"), N = Lf*B sequences (index l*B + b), S = W*fQ tokens per window,
Lv video-decoder layers, Hm x Wm the stride-4 grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avis.models.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    anchor_embedding,
)
from avis.models.peak_prior import PeakPrior
from avis.models.position import sine_point_encoding
from avis.models.windows import (
    WindowLayout,
    merge_windows,
    shifted_window_blocked,
    split_windows,
    tokens_mask,
    window_groups,
    window_layout,
)

# Additive attention logit of a blocked pair in shifted windows. The official code uses a
# finite value (not -inf): a fully blocked row then behaves like an unmasked one instead of
# producing NaN. Kept for parity.
SHIFT_MASK_VALUE = -1000.0
MASK_EMBED_LAYERS = 3
AUDIO_BIAS_LAYERS = 2  # MLP of the optional per-frame audio term of the video mask features
ANCHOR_EMBED_LAYERS = 2  # MLPs of anchor / mask-position codes (anchor_queries, position_cues)
QUALITY_LAYERS = 2  # MLP of the optional mask-IoU prediction (mask_quality)

# (q tokens, kv tokens or None, attn_mask, key_padding_mask) -> q tokens; all (S, batch, C)
Block = Callable[[Tensor, "Tensor | None", "Tensor | None", "Tensor | None"], Tensor]


def _self_block(
    attn: SelfAttentionLayer, ffn: FFNLayer, q: Tensor, kv: Tensor | None, mask, kpm
) -> Tensor:
    return ffn(attn(q, attn_mask=mask, key_padding_mask=kpm))


def _cross_block(
    attn: CrossAttentionLayer, ffn: FFNLayer, q: Tensor, kv: Tensor | None, mask, kpm
) -> Tensor:
    return ffn(attn(q, kv, memory_mask=mask, memory_key_padding_mask=kpm))


class VideoModule(nn.Module):
    """Window-attention frame-token encoder + audio-visual fusion encoder + video decoder."""

    def __init__(
        self,
        *,
        frame_dim: int,
        hidden_dim: int,
        num_heads: int,
        dim_feedforward: int,
        num_frame_queries: int,
        num_queries: int,
        enc_layers: int,
        dec_layers: int,
        window_size: int,
        num_classes: int,
        audio_dim: int,
        mask_in_dim: int,
        mask_dim: int,
        pre_norm: bool = False,
        enforce_input_proj: bool = True,
        use_sim: bool = True,
        sim_use_clip: bool = True,
        audio_mask_bias: bool = False,
        per_frame_mask_embed: bool = False,
        recurrent_refine: bool = False,
        refine_by_content: bool = False,
        consensus_refine: bool = False,
        mask_quality: bool = False,
        anchor_queries: bool = False,
        position_cues: bool = False,
        peak_prior: bool = False,
    ) -> None:
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"dec_layers must be >= 1, got {dec_layers}")
        if recurrent_refine and not per_frame_mask_embed:
            raise ValueError("recurrent_refine needs per_frame_mask_embed")
        if refine_by_content and not per_frame_mask_embed:
            raise ValueError("refine_by_content needs per_frame_mask_embed")
        if consensus_refine and (not per_frame_mask_embed or recurrent_refine):
            raise ValueError("consensus_refine needs per_frame_mask_embed and excludes recurrent_refine")
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.num_frame_queries = num_frame_queries
        self.window_size = window_size
        # avis option (no parameters): the per-frame re-read's keys carry no slot embedding
        self.refine_by_content = refine_by_content
        self.use_sim = use_sim
        self.sim_use_clip = sim_use_clip

        def attn(cls: type[nn.Module]) -> nn.Module:
            return cls(hidden_dim, num_heads, dropout=0.0, normalize_before=pre_norm)

        def ffn() -> FFNLayer:
            return FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)

        self.transformer_self_attention_layers = nn.ModuleList(
            attn(SelfAttentionLayer) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            attn(CrossAttentionLayer) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(ffn() for _ in range(dec_layers))
        self.av_proj = nn.Linear(audio_dim, hidden_dim)
        self.enc_self_attn = nn.ModuleList(attn(SelfAttentionLayer) for _ in range(enc_layers))
        self.enc_ffn = nn.ModuleList(ffn() for _ in range(enc_layers))
        self.enc_av_cross_attn = nn.ModuleList(attn(CrossAttentionLayer) for _ in range(enc_layers))
        self.enc_av_ffn = nn.ModuleList(ffn() for _ in range(enc_layers))
        self.avism_mask_features = nn.Conv2d(mask_in_dim, mask_dim, kernel_size=1)
        nn.init.xavier_uniform_(self.avism_mask_features.weight)
        assert self.avism_mask_features.bias is not None  # built with a bias
        nn.init.zeros_(self.avism_mask_features.bias)
        if audio_mask_bias:  # not in the official model, see mask_features
            self.audio_mask_bias = MLP(audio_dim, mask_dim, mask_dim, AUDIO_BIAS_LAYERS)
            last = cast(nn.Linear, self.audio_mask_bias.layers[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if per_frame_mask_embed:  # not in the official model, see _mask_embed
            self.frame_refine = attn(CrossAttentionLayer)
        if recurrent_refine:  # not in the official model, see _refine_frames
            self.refine_carry = nn.Linear(hidden_dim, hidden_dim)
            nn.init.zeros_(self.refine_carry.weight)
            nn.init.zeros_(self.refine_carry.bias)
        self.refine_consensus = None
        if consensus_refine:  # not in the official model, see _refine_frames
            self.refine_consensus = nn.Linear(hidden_dim, hidden_dim)
            nn.init.zeros_(self.refine_consensus.weight)
            nn.init.zeros_(self.refine_consensus.bias)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        if anchor_queries:  # not in the official model, see query_pos
            self.anchor_embed = MLP(hidden_dim, hidden_dim, hidden_dim, ANCHOR_EMBED_LAYERS)
        else:
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if position_cues:  # not in the official model, see add_position_cues
            self.mask_position_embed = MLP(frame_dim + 3, frame_dim, frame_dim, ANCHOR_EMBED_LAYERS)
            last = cast(nn.Linear, self.mask_position_embed.layers[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # not in the official model: a radial mask term around each query's peak (peak_prior.py)
        self.peak_prior = PeakPrior(mask_dim) if peak_prior else None
        self.fq_pos = nn.Embedding(num_frame_queries, hidden_dim)
        if frame_dim != hidden_dim or enforce_input_proj:
            self.input_proj_dec: nn.Module = nn.Linear(frame_dim, hidden_dim)
        else:
            self.input_proj_dec = nn.Identity()
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, MASK_EMBED_LAYERS)
        if mask_quality:  # not in the official model: see quality_embed in forward
            self.quality_embed = MLP(hidden_dim, hidden_dim, 1, QUALITY_LAYERS)
        if use_sim:
            self.sim_embed_frame = nn.Linear(hidden_dim, hidden_dim)
            if sim_use_clip:
                self.sim_embed_clip = nn.Linear(hidden_dim, hidden_dim)

    # ------------------------------------------------------------------ public API
    @property
    def per_frame_mask_embed(self) -> bool:
        """True when the mask embeddings are per frame: (..., cQ, T, Cm) instead of (..., cQ, Cm)."""
        return hasattr(self, "frame_refine")

    @property
    def recurrent_refine(self) -> bool:
        """True when each frame's re-read of a video query starts from the previous frame's."""
        return hasattr(self, "refine_carry")

    @property
    def anchor_queries(self) -> bool:
        return hasattr(self, "anchor_embed")

    @property
    def position_cues(self) -> bool:
        return hasattr(self, "mask_position_embed")

    def query_pos(self) -> Tensor:  # (cQ, C)
        """The video queries' position embeddings: a learned table (official), or with
        ``anchor_queries`` an MLP of the sine code of each query's anchor point (as in the
        frame decoder, `FrameDecoder.query_pos`)."""
        if not self.anchor_queries:
            return self.query_embed.weight
        return anchor_embedding(self.anchor_embed, self.num_queries)

    def add_position_cues(self, frame_queries: Tensor, frame_masks: Tensor) -> Tensor:
        """Frame queries (..., fQ, C_frame) + an embedding of where their masks lie.

        frame_masks (..., fQ, Hm, Wm): mask logits of the same predictions (not
        differentiated). An avis option (``position_cues``, off in the official model): the
        frame queries of Mask2Former carry little position information, so two look-alike
        instances of a class give near-identical tokens, and a video query cannot attend to
        one of them rather than the other. The embedding reads the sine code of each mask's
        soft centroid (the code an anchored query's position is made from, ``anchor_queries``)
        and its spreads and log area (`mask_moments`); zero-initialised.
        """
        moments = mask_moments(frame_masks.detach())  # (..., fQ, 5)
        first = cast(nn.Linear, self.mask_position_embed.layers[0])
        code = sine_point_encoding(moments[..., :2], (first.in_features - 3) // 2)
        cues = torch.cat([code, moments[..., 2:]], -1).to(frame_queries.dtype)
        return frame_queries + self.mask_position_embed(cues)

    def mask_features(self, stride4_map: Tensor, audio: Tensor | None = None) -> Tensor:
        """The video module's own 1x1 conv of the pixel decoder's stride-4 map.

        (BT, C_pix, Hm, Wm), audio (BT, D) -> (BT, Cm, Hm, Wm). With `audio_mask_bias` (an
        avis option, off in the official model) an embedding of each frame's audio is added
        at every pixel, so a track's mask logit gets a per-frame term embed . g(audio_t):
        without it the masks of a track are the same function of the pixels in every frame
        and cannot switch off where the object stops sounding.
        """
        features = self.avism_mask_features(stride4_map)
        if hasattr(self, "audio_mask_bias"):
            if audio is None:
                raise ValueError("this model adds an audio term to its mask features: pass audio")
            features = features + self.audio_mask_bias(audio)[:, :, None, None]
        return features

    def forward(self, frame_queries: Tensor, audio: Tensor) -> VideoModuleOutput:
        """frame_queries (Lf, B*T, fQ, C_frame), clip-major frames; audio (B, T, D)."""
        lf, bt, fq, _ = frame_queries.shape
        b, t, _ = audio.shape
        if b * t != bt:
            raise ValueError(
                f"frame_queries hold {bt} frames but audio is (B={b}, T={t}, D): expected B*T = {bt}"
            )
        n = lf * b
        layout = window_layout(t, self.window_size, frame_queries.device)
        tp = layout.padded_frames

        # (Lf, B*T, fQ, C) -> (T, fQ, N, C), sequence index n = l*B + b
        frames = frame_queries.reshape(n, t, fq, -1).permute(1, 2, 0, 3)
        frames = self.input_proj_dec(frames)
        # one audio token per frame, shared by the Lf copies of a clip: (T, 1, N, C)
        sound = self.av_proj(audio).repeat(lf, 1, 1).permute(1, 0, 2).unsqueeze(1)
        pad = tp - t
        frames = F.pad(frames, (0, 0, 0, 0, 0, 0, 0, pad))  # zero tokens for padding frames
        sound = F.pad(sound, (0, 0, 0, 0, 0, 0, 0, pad))

        frames = self._encode_frames(frames, layout)
        sound = self._encode_audio(sound, frames, layout)
        enc_frames = frames[:t]  # (T, fQ, N, C)
        enc_audio = sound[:t].expand(t, fq, n, sound.shape[-1])  # constant over fQ

        fused = enc_frames + enc_audio  # (T, fQ, N, C)
        fq_embed = None
        if self.use_sim:
            fq_embed = self.sim_embed_frame(fused)  # (T, fQ, N, C)
            fq_embed = fq_embed.permute(2, 0, 1, 3).reshape(lf, b, t, fq, -1)

        src = fused.flatten(0, 1)  # (T*fQ, N, C)
        decoded = self._decode(src, t)  # (Lv, cQ, N, C)
        mask_embed = self._mask_embed(decoded, fused, lf, b)
        decoded = decoded.transpose(1, 2).reshape(decoded.shape[0], lf, b, self.num_queries, -1)
        cq_embed = None
        if self.use_sim and self.sim_use_clip:
            cq_embed = self.sim_embed_clip(decoded)
        # avis option `mask_quality`: a logit of the IoU that each track's mask will have with
        # its ground truth (trained on matched tracks), so that a track whose mask covers two
        # look-alike objects can be ranked below clean ones
        quality = None
        if hasattr(self, "quality_embed"):
            quality = self.quality_embed(decoded).squeeze(-1)  # (Lv, Lf, B, cQ)
        return VideoModuleOutput(
            pred_logits=self.class_embed(decoded),
            pred_mask_embed=mask_embed,
            pred_fq_embed=fq_embed,
            pred_cq_embed=cq_embed,
            enc_frame_tokens=enc_frames,
            enc_audio_tokens=enc_audio,
            pred_quality=quality,
        )

    # ------------------------------------------------------------------ encoders
    def _encode_frames(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """Window self-attention over frame tokens; (Tp, fQ, N, C) -> same.

        Odd layers use shifted windows at test time only (official behaviour).
        """
        for i, (attn, ffn) in enumerate(zip(self.enc_self_attn, self.enc_ffn)):
            assert isinstance(attn, SelfAttentionLayer) and isinstance(ffn, FFNLayer)
            shifted = layout.windowed and not self.training and i % 2 == 1
            x = self._windowed(partial(_self_block, attn, ffn), x, None, layout, shifted)
        return x

    def _encode_audio(self, sound: Tensor, frames: Tensor, layout: WindowLayout) -> Tensor:
        """Audio tokens cross-attend to the encoded frame tokens of their window.

        sound (Tp, 1, N, C): one query per frame (the official code repeats it over the fQ
        tokens of the frame; every copy gets the same result, so one is computed).
        frames (Tp, fQ, N, C) keys/values. Odd layers use shifted windows in training and at
        test time alike.
        """
        for i, (attn, ffn) in enumerate(zip(self.enc_av_cross_attn, self.enc_av_ffn)):
            assert isinstance(attn, CrossAttentionLayer) and isinstance(ffn, FFNLayer)
            shifted = layout.windowed and i % 2 == 1
            block = partial(_cross_block, attn, ffn)
            sound = self._windowed(block, sound, frames, layout, shifted)
        return sound

    def _windowed(
        self, block: Block, q: Tensor, kv: Tensor | None, layout: WindowLayout, shifted: bool
    ) -> Tensor:
        """Apply ``block`` inside (plain or shifted) windows.

        q (Tp, Pq, N, C) queries; kv (Tp, Pk, N, C) keys/values or None for self-attention.
        ``block(q_tokens, kv_tokens, attn_mask, key_padding_mask)`` works on sequence-first
        (S, batch, C) tensors.
        """
        pq, n = q.shape[1], q.shape[2]
        pk = pq if kv is None else kv.shape[1]
        if shifted:
            q = torch.roll(q, layout.shift, 0)
            kv = None if kv is None else torch.roll(kv, layout.shift, 0)
        qw = split_windows(q, layout)  # (W*Pq, N, Nw, C)
        kw = None if kv is None else split_windows(kv, layout)
        nw, c = layout.num_windows, q.shape[-1]

        if not shifted:
            kpm = None
            if bool(layout.padded.any()):
                kpm = layout.padded.view(nw, layout.window).repeat_interleave(pk, 1)  # (Nw, S)
                kpm = kpm.unsqueeze(0).expand(n, nw, -1).reshape(n * nw, -1)
            flat_k = None if kw is None else kw.reshape(kw.shape[0], n * nw, c)
            out = block(qw.reshape(qw.shape[0], n * nw, c), flat_k, None, kpm)
            out = out.view(qw.shape[0], n, nw, c)
        else:
            out = torch.empty_like(qw)
            for idx, frame_mask in window_groups(shifted_window_blocked(layout)):
                k = idx.numel()
                qs = qw[:, :, idx].reshape(qw.shape[0], n * k, c)
                ks = None if kw is None else kw[:, :, idx].reshape(kw.shape[0], n * k, c)
                mask = None
                if bool(frame_mask.any()):
                    blocked = tokens_mask(frame_mask, pq, pk)
                    mask = torch.zeros(blocked.shape, dtype=q.dtype, device=q.device)
                    mask = mask.masked_fill(blocked, SHIFT_MASK_VALUE)
                out[:, :, idx] = block(qs, ks, mask, None).view(qw.shape[0], n, k, c)
        out = merge_windows(out, layout, pq)
        if shifted:
            out = torch.roll(out, -layout.shift, 0)
        return out

    # ------------------------------------------------------------------ decoder
    def _decode(self, src: Tensor, num_frames: int) -> Tensor:
        """Video queries attend to all T*fQ fused tokens: src (T*fQ, N, C) -> (Lv, cQ, N, C)."""
        n = src.shape[1]
        pos = self.fq_pos.weight.repeat(num_frames, 1).unsqueeze(1)  # (T*fQ, 1, C)
        query_pos = self.query_pos().unsqueeze(1)  # (cQ, 1, C)
        out = self.query_feat.weight.unsqueeze(1).repeat(1, n, 1)  # (cQ, N, C)
        layers = zip(
            self.transformer_cross_attention_layers,
            self.transformer_self_attention_layers,
            self.transformer_ffn_layers,
        )
        decoded = []
        for cross, self_attn, ffn in layers:
            out = cross(out, src, pos=pos, query_pos=query_pos)
            out = self_attn(out, query_pos=query_pos)
            out = ffn(out)
            decoded.append(self.decoder_norm(out))
        return torch.stack(decoded)

    def _mask_embed(self, decoded: Tensor, fused: Tensor, lf: int, b: int) -> Tensor:
        """decoded (Lv, cQ, N, C) -> (Lv, Lf, B, cQ, Cm), or per frame (Lr, Lf, B, cQ, T, Cm).

        Per frame (an avis option, ``per_frame_mask_embed``, off in the official model): each
        video query re-reads the fused tokens (T, fQ, N, C) of one frame at a time before its
        mask embedding. With one embedding per track, two look-alike instances of a class can
        only be told apart by position features, which move; a per-frame embedding can follow
        the frame query that holds its instance in that frame. Class scores stay per track.
        Training refines every decoder layer (deep supervision, Lr = Lv), inference the last
        one only (Lr = 1).
        """
        if not self.per_frame_mask_embed:
            per_track = decoded.transpose(1, 2).reshape(decoded.shape[0], lf, b, self.num_queries, -1)
            return self.mask_embed(per_track)
        if not self.training:
            decoded = decoded[-1:]
        lr, cq, n, c = decoded.shape
        t, fq = fused.shape[:2]
        # one sequence per (layer, clip): index l*N + n
        queries = decoded.transpose(0, 1).reshape(cq, lr * n, c)
        memory = fused.permute(1, 2, 0, 3)[:, None].expand(fq, lr, n, t, c).reshape(fq, lr * n, t, c)
        out = self._refine_frames(queries, memory)  # (cQ, Lr*N, T, C)
        out = out.view(cq, lr, lf, b, t, c).permute(1, 2, 3, 0, 4, 5)  # (Lr, Lf, B, cQ, T, C)
        return self.mask_embed(out)

    def _refine_frames(self, queries: Tensor, memory: Tensor) -> Tensor:
        """queries (cQ, M, C), memory (fQ, M, T, C) -> (cQ, M, T, C): each video query
        re-reads the tokens of one frame at a time.

        With ``recurrent_refine`` (an avis option, off in the official model) the frames are
        read in order and the query of frame t is the video query plus a learnt map of what it
        read in frame t-1 (zero-initialised, so training starts from the independent re-reads).
        Without it, a query can pick either of two look-alike instances anew in every frame,
        and a track then jumps between them; the tie is meant to let the query prefer the
        instance that resembles, and lies near, the one it held a frame earlier (on the
        synthetic benchmark it did not: docs/model.md).

        The keys are the frame tokens plus their slot's learnt position embedding ``fq_pos``
        (as in the official decoder's read of all frames), so a query could learn to read a
        slot rather than an instance. With ``refine_by_content`` (an avis option, off in the
        official model; no parameters) the keys are the tokens alone; on the synthetic
        benchmark that changed nothing (docs/results/tiny_r47): the re-read follows the
        content of the token that holds the class most confidently, not its slot.

        With ``consensus_refine`` (an avis option, off in the official model) every frame is
        read twice: the second time the query is the video query plus a learnt map of the
        mean of what it read in all T frames (zero-initialised), so that each frame's read
        can prefer the instance the track holds in most frames, in either direction of time.
        """
        pos = None if self.refine_by_content else self.fq_pos.weight.unsqueeze(1)  # (fQ, 1, C)
        query_pos = self.query_pos().unsqueeze(1)  # (cQ, 1, C)
        (cq, m, c), (fq, t) = queries.shape, (memory.shape[0], memory.shape[2])
        if not self.recurrent_refine:  # all frames at once: batch element (l*N + n)*T + t
            keys = memory.reshape(fq, m * t, c)

            def read(query: Tensor) -> Tensor:  # (cQ, M, C) -> (cQ, M, T, C)
                flat = query[:, :, None].expand(cq, m, t, c).reshape(cq, m * t, c)
                return self.frame_refine(flat, keys, pos=pos, query_pos=query_pos).view(cq, m, t, c)

            out = read(queries)
            if self.refine_consensus is not None:
                out = read(queries + self.refine_consensus(out.mean(dim=2)))
            return out
        outs = []
        held = queries.new_zeros(cq, m, c)  # what each query read in the previous frame
        for frame in range(t):
            query = queries + self.refine_carry(held)
            held = self.frame_refine(query, memory[:, :, frame], pos=pos, query_pos=query_pos)
            outs.append(held)
        return torch.stack(outs, dim=2)


@dataclass
class VideoModuleOutput:
    """Raw video-module outputs (all decoder layers; index -1 = last)."""

    pred_logits: Tensor  # (Lv, Lf, B, cQ, K+1)
    # (Lv, Lf, B, cQ, Cm); per_frame_mask_embed: (Lv, Lf, B, cQ, T, Cm), Lv = 1 at test
    pred_mask_embed: Tensor
    pred_fq_embed: Tensor | None  # (Lf, B, T, fQ, C), sim_embed_frame of the fused tokens
    pred_cq_embed: Tensor | None  # (Lv, Lf, B, cQ, C)
    enc_frame_tokens: Tensor  # (T, fQ, N, C) frame-token encoder output, real frames only
    enc_audio_tokens: Tensor  # (T, fQ, N, C) audio-visual encoder output (constant over fQ)
    pred_quality: Tensor | None = None  # (Lv, Lf, B, cQ) mask-IoU logits (mask_quality option)


def video_masks(
    mask_embed: Tensor,
    mask_features: Tensor,
    per_frame: bool = False,
    prior: PeakPrior | None = None,
    valid: tuple[int, int] | None = None,
) -> Tensor:
    """Mask logits of video queries: (..., B, cQ, Cm), or with ``per_frame`` (..., B, cQ, T, Cm),
    x (B, T, Cm, Hm, Wm) -> (..., B, cQ, T, Hm, Wm); with the ``peak_prior`` option's term
    (its peak looked for in the first ``valid`` rows and columns of the grid, None = all)."""
    if per_frame:
        logits = torch.einsum("...bqtc,btchw->...bqthw", mask_embed, mask_features)
    else:
        logits = torch.einsum("...bqc,btchw->...bqthw", mask_embed, mask_features)
    if prior is None:
        return logits
    return prior(mask_embed if per_frame else mask_embed.unsqueeze(-2), logits, valid)


def mask_moments(mask_logits: Tensor) -> Tensor:
    """Soft position of masks: (..., Hm, Wm) logits -> (..., 5) = centroid x, y in [0, 1] of the
    grid (cell centres), spreads (standard deviations) in the same units, log area fraction."""
    probs = mask_logits.float().sigmoid()
    h, w = probs.shape[-2:]
    ys = (torch.arange(h, dtype=torch.float32, device=probs.device) + 0.5) / h  # (Hm,)
    xs = (torch.arange(w, dtype=torch.float32, device=probs.device) + 0.5) / w  # (Wm,)
    mass_y, mass_x = probs.sum(-1), probs.sum(-2)  # (..., Hm), (..., Wm)
    mass = mass_y.sum(-1, keepdim=True) + 1e-6
    cy = (mass_y * ys).sum(-1, keepdim=True) / mass
    cx = (mass_x * xs).sum(-1, keepdim=True) / mass
    sy = ((mass_y * (ys - cy) ** 2).sum(-1, keepdim=True) / mass).sqrt()
    sx = ((mass_x * (xs - cx) ** 2).sum(-1, keepdim=True) / mass).sqrt()
    return torch.cat([cx, cy, sx, sy, (mass / (h * w)).log()], -1)
