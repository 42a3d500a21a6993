"""AVISM frame-level decoder: Mask2Former masked-attention decoder with audio-guided queries.

Letters: N = B*T frames (independent batch elements), fQ frame queries, C hidden size,
K classes (+1 "no object"), A audio feature size, nL feature levels (3), h heads,
Dl = num_layers + 1 predictions (initial queries + one per layer), Lf frame-query layers,
h_l x w_l size of level l, Hm x Wm mask-feature size (stride 4).

Before the first layer, each frame's audio vector localises its sound source on every level
(``av_sf[l]``: cross-attention from audio+query_embed to the level's features) and the
concatenated results, projected back to C (``av_post_proj``), are added to the learned query
features. Then the Mask2Former loop: prediction heads on the current queries, attention mask
for the next level from the predicted masks, masked cross-attention -> self-attention -> FFN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avis.models.layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from avis.models.position import PositionEmbeddingSine

MASK_THRESHOLD = 0.5  # attention blocked where sigmoid(predicted mask) < this
MASK_EMBED_LAYERS = 3


@dataclass
class FrameDecoderOutput:
    pred_logits: Tensor  # (Dl, N, fQ, K+1) class logits; index -1 = last layer
    pred_masks: Tensor  # (Dl, N, fQ, Hm, Wm) mask logits
    frame_queries: Tensor  # (Lf, N, fQ, C) decoder_norm outputs of the last Lf predictions
    audio_fusion: Tensor  # (fQ, N, C) av_post_proj output added to the query features


class FrameDecoder(nn.Module):
    def __init__(
        self,
        in_channels: int = 256,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_classes: int = 26,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        mask_dim: int = 256,
        audio_dim: int = 128,
        num_feature_levels: int = 3,
        pre_norm: bool = False,
        enforce_input_proj: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """dec_layers = number of decoder blocks (official DEC_LAYERS minus 1)."""
        super().__init__()
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_feature_levels = num_feature_levels
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)

        self.av_pre_proj = nn.Linear(audio_dim, hidden_dim)
        self.av_sf = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            for _ in range(num_feature_levels)
        )
        self.av_post_proj = nn.Linear(hidden_dim * num_feature_levels, hidden_dim)

        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=dropout, normalize_before=pre_norm)
            for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        # identity (no parameters) when the pixel decoder already gives hidden_dim channels
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, MASK_EMBED_LAYERS)

    def _heads(
        self, output: Tensor, mask_features: Tensor, attn_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """output (fQ, N, C) -> class (N, fQ, K+1), masks (N, fQ, Hm, Wm),
        attention mask (N*h, fQ, h_l*w_l) bool (True = blocked), normalised queries (N, fQ, C)."""
        decoded = self.decoder_norm(output).transpose(0, 1)  # (N, fQ, C)
        logits = self.class_embed(decoded)
        masks = torch.einsum("nqc,nchw->nqhw", self.mask_embed(decoded), mask_features)
        resized = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
        blocked = resized.sigmoid().flatten(2) < MASK_THRESHOLD  # (N, fQ, h_l*w_l)
        # a query whose mask is empty at this level may look everywhere
        blocked = blocked & ~blocked.all(-1, keepdim=True)
        blocked = blocked.repeat_interleave(self.num_heads, dim=0).detach()  # (N*h, fQ, h_l*w_l)
        return logits, masks, blocked, decoded

    def audio_fusion(
        self, srcs: Sequence[Tensor], audio: Tensor, query_embed: Tensor
    ) -> Tensor:  # (fQ, N, C)
        """srcs: per level (h_l*w_l, N, C); audio (N, A); query_embed (fQ, N, C)."""
        a = self.av_pre_proj(audio).unsqueeze(0).expand_as(query_embed)  # (fQ, N, C)
        located = [layer(a, src, query_pos=query_embed) for layer, src in zip(self.av_sf, srcs)]
        return self.av_post_proj(torch.cat(located, dim=-1))

    def forward(
        self,
        multi_scale_features: Sequence[Tensor],  # nL x (N, C_in, h_l, w_l), coarse to fine
        mask_features: Tensor,  # (N, mask_dim, Hm, Wm)
        audio: Tensor,  # (N, A), one vector per frame
        num_frame_query_layers: int = 1,
    ) -> FrameDecoderOutput:
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature maps, got {len(multi_scale_features)}"
            )
        n = mask_features.shape[0]
        if audio.shape[0] != n:
            raise ValueError(
                f"audio has {audio.shape[0]} vectors for {n} frames (need one per frame)"
            )
        if not 1 <= num_frame_query_layers <= self.num_layers + 1:
            raise ValueError(
                f"num_frame_query_layers must be in 1..{self.num_layers + 1}, got {num_frame_query_layers}"
            )
        srcs, pos, sizes = [], [], []
        for lvl, x in enumerate(multi_scale_features):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            pos.append(self.pe_layer(x).flatten(2).permute(2, 0, 1))  # (h_l*w_l, N, C)
            src = self.input_proj[lvl](x).flatten(2) + self.level_embed.weight[lvl][None, :, None]
            srcs.append(src.permute(2, 0, 1))  # (h_l*w_l, N, C)

        query_embed = self.query_embed.weight.unsqueeze(1).expand(-1, n, -1)  # (fQ, N, C)
        fusion = self.audio_fusion(srcs, audio, query_embed)
        output = self.query_feat.weight.unsqueeze(1) + fusion  # (fQ, N, C)

        all_logits, all_masks, all_queries = [], [], []
        logits, masks, attn_mask, decoded = self._heads(output, mask_features, sizes[0])
        all_logits.append(logits)
        all_masks.append(masks)
        all_queries.append(decoded)
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output, srcs[lvl], memory_mask=attn_mask, pos=pos[lvl], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            next_size = sizes[(i + 1) % self.num_feature_levels]
            logits, masks, attn_mask, decoded = self._heads(output, mask_features, next_size)
            all_logits.append(logits)
            all_masks.append(masks)
            all_queries.append(decoded)
        return FrameDecoderOutput(
            pred_logits=torch.stack(all_logits),
            pred_masks=torch.stack(all_masks),
            frame_queries=torch.stack(all_queries[-num_frame_query_layers:]),
            audio_fusion=fusion,
        )
