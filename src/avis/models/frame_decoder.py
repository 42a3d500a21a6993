"""AVISM frame-level decoder: Mask2Former masked-attention decoder with audio-guided queries.

Letters: N = B*T frames (independent batch elements), fQ frame queries, C hidden size,
K classes (+1 "no object"), A audio feature size, nL feature levels (3), h heads,
Dl = num_layers + 1 predictions (initial queries + one per layer; in training one more, first,
with ``query_selection``: the selected tokens' own), Lf frame-query layers,
h_l x w_l size of level l, Hm x Wm mask-feature size (stride 4).

Before the first layer, each frame's audio vector localises its sound source on every level
(``av_sf[l]``: cross-attention from audio+query_embed to the level's features) and the
concatenated results, projected back to C (``av_post_proj``), are added to the learned query
features. Then the Mask2Former loop: prediction heads on the current queries, attention mask
for the next level from the predicted masks, masked cross-attention -> self-attention -> FFN.

Mask pilots (an avis option, training only, ``mask_pilots``; MP-Former, Zhang et al., CVPR
2023): G extra queries per frame, one per GT instance of the frame, start from the embedding
of its (noised) class and attend, at every layer, only where its (noised) GT mask lies; their
predictions are supervised against that instance without matching. They share every layer
with the learned queries, which cannot see them (self-attention is blocked that way), so the
learned queries' outputs are the same with or without pilots. What the shared layers learn
from them: a query whose attention lies on one of two look-alikes keeps to that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from avis.models.position import PositionEmbeddingSine

MASK_THRESHOLD = 0.5  # attention blocked where sigmoid(predicted mask) < this
HELD_THRESHOLD = 0.5  # a slot holds an object when its P(no object) is below this (carry_slots)
MASK_EMBED_LAYERS = 3
ANCHOR_EMBED_LAYERS = 2  # MLP of the anchor points' sine codes (anchor_queries option)


def peaks_first(scores: Tensor, fine_size: tuple[int, int], k: int) -> Tensor:
    """Indices (N, k) of the k best tokens of scores (N, S), whose last h*w entries are the
    finest level's (h, w) map: a 3 x 3 local maximum there counts double, so each object's
    peak ranks before a large object's other tokens (``FrameDecoder.select_queries``)."""
    h, w = fine_size
    fine = scores[:, scores.shape[1] - h * w :].reshape(-1, 1, h, w)  # (N, 1, h, w)
    peaks = fine == F.max_pool2d(fine, 3, stride=1, padding=1)
    rank = torch.cat([scores[:, : scores.shape[1] - h * w], (fine * (1 + peaks)).flatten(1)], dim=1)
    return rank.topk(k, dim=1).indices


@dataclass
class PilotQueries:
    """The mask-pilot queries of a training batch (see the module docstring); G per frame."""

    labels: Tensor  # (N, G) int64 class whose embedding starts each query (noised), 0..K-1
    masks: Tensor  # (N, G, Hm, Wm) float in [0, 1], the (noised) GT mask each query attends in
    valid: Tensor  # (N, G) bool, False = padding (frames with fewer than G instances)


@dataclass
class SlotCarry:
    """What one frame hands the next with ``carry_slots`` (an avis option, see
    ``FrameDecoder.forward``): each slot's last query, where its last mask lay and whether it
    held an object."""

    queries: Tensor  # (N, fQ, C) the frame's last-layer queries (decoder_norm outputs)
    masks: Tensor  # (N, fQ, Hm, Wm) mask logits of the frame's last prediction (no gradient)
    held: Tensor  # (N, fQ) bool, the slot's P(no object) < HELD_THRESHOLD

    @classmethod
    def of(cls, out: FrameDecoderOutput) -> SlotCarry:
        """The carry of a frame decoder's output (its last prediction)."""
        no_object = out.pred_logits[-1].softmax(-1)[..., -1]  # (N, fQ)
        return cls(
            queries=out.frame_queries[-1],
            masks=out.pred_masks[-1].detach(),
            held=(no_object < HELD_THRESHOLD).detach(),
        )


@dataclass
class FrameDecoderOutput:
    pred_logits: Tensor  # (Dl, N, fQ, K+1) class logits; index -1 = last layer
    pred_masks: Tensor  # (Dl, N, fQ, Hm, Wm) mask logits (Dl = 1 if only the last layer's)
    frame_queries: Tensor  # (Lf, N, fQ, C) decoder_norm outputs of the last Lf predictions
    audio_fusion: Tensor  # (fQ, N, C) av_post_proj output added to the query features
    pilot_logits: Tensor | None = None  # (Dl, N, G, K+1) with pilots
    pilot_masks: Tensor | None = None  # (Dl, N, G, Hm, Wm) with pilots


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
        anchor_queries: bool = False,
        query_selection: bool = False,
        mask_pilots: bool = False,
    ) -> None:
        """dec_layers = number of decoder blocks (official DEC_LAYERS minus 1).

        ``anchor_queries`` (an avis option, off in the official model): each query's position
        embedding is an MLP of the sine code of a fixed anchor point (`query_anchors`) instead
        of a learned table row, see `query_pos`.

        ``query_selection`` (an avis option, off in the official model): the queries start
        from the frame's own feature tokens instead of a learned table, see `select_queries`.

        ``mask_pilots`` (an avis option, off in the official model): a class-embedding table
        for the training-only pilot queries (module docstring); inference is unchanged.
        """
        super().__init__()
        if anchor_queries and query_selection:
            raise ValueError("anchor_queries and query_selection are exclusive (both place the queries)")
        if mask_pilots and query_selection:
            raise ValueError("mask_pilots and query_selection are exclusive")
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
        self.num_queries = num_queries
        if query_selection:  # queries from the frame's tokens: no learned query tables
            self.token_proj = nn.Linear(hidden_dim, hidden_dim)
            self.token_norm = nn.LayerNorm(hidden_dim)
        else:
            self.query_feat = nn.Embedding(num_queries, hidden_dim)
            if anchor_queries:
                self.anchor_embed = MLP(hidden_dim, hidden_dim, hidden_dim, ANCHOR_EMBED_LAYERS)
            else:
                self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        # identity (no parameters) when the pixel decoder already gives hidden_dim channels
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                assert conv.bias is not None  # built with a bias
                nn.init.zeros_(conv.bias)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, MASK_EMBED_LAYERS)
        self.pilot_label_embed = nn.Embedding(num_classes, hidden_dim) if mask_pilots else None

    @property
    def anchor_queries(self) -> bool:
        return hasattr(self, "anchor_embed")

    @property
    def query_selection(self) -> bool:
        return hasattr(self, "token_proj")

    def select_queries(
        self, srcs: Sequence[Tensor], pos: Sequence[Tensor], sizes: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The ``query_selection`` option: each frame's queries start from fQ of its own tokens.

        srcs, pos: per level (h_l*w_l, N, C), coarse to fine. Every token of every level is
        projected (``token_proj`` + ``token_norm``) and scored by the prediction heads (best
        object class); the fQ best tokens become the queries, the local maxima (3 x 3) of the
        finest level's score map first (their scores count double), so that every object,
        small or large, gets a query at its peak before a large one gets a second. A query's
        position embedding is the sine code of its token's place: two look-alike instances
        start as two queries, each at its own instance (the learned queries of Mask2Former are
        all alike until training has made them specialise by place, and one whose mask covers
        two twins attends to both). The two-stage query selection of Deformable DETR / Mask
        DINO, with peaks first because 20 queries must cover up to five objects.

        Returns the queries (fQ, N, C), their position embeddings (fQ, N, C) and the selected
        tokens (N, fQ, C) for their own prediction (supervised in training: it is what trains
        the scores the selection ranks by).
        """
        memory = torch.cat(list(srcs), dim=0).transpose(0, 1)  # (N, S, C), S tokens of all levels
        if memory.shape[1] < self.num_queries:
            raise ValueError(
                f"query_selection needs >= {self.num_queries} feature tokens per frame, the "
                f"levels {list(sizes)} have {memory.shape[1]}: give larger frames"
            )
        tokens = self.token_norm(self.token_proj(memory))  # (N, S, C)
        with torch.no_grad():
            scores = self.class_embed(self.decoder_norm(tokens)).softmax(-1)[..., :-1].amax(-1)
            index = peaks_first(scores, sizes[-1], self.num_queries)  # (N, fQ)
        keys_pos = torch.cat(list(pos), dim=0).transpose(0, 1)  # (N, S, C)
        index = index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])  # (N, fQ, C)
        selected = tokens.gather(1, index)  # (N, fQ, C)
        query_pos = keys_pos.gather(1, index)
        return selected.transpose(0, 1), query_pos.transpose(0, 1), selected

    def query_pos(self) -> Tensor:  # (fQ, C)
        """The queries' position embeddings (added to the queries of every attention).

        With ``anchor_queries``: query q is placed at anchor point q (a grid over the frame,
        the points the matcher's ``anchor_cost`` uses) and embedded with the sine code that
        the pixels at that place get as keys. Two look-alike instances then differ for a
        query by their distance to its anchor, in its attention and so in its content: the
        learned queries of Mask2Former are all alike until training has made them specialise
        by place, and a query whose mask covers two twins attends to both equally.
        """
        if self.query_selection:
            raise RuntimeError("with query_selection each frame's query positions come from select_queries")
        if not self.anchor_queries:
            return self.query_embed.weight
        return anchor_embedding(self.anchor_embed, self.num_queries)

    def attention_mask(self, level_mask_logits: Tensor) -> Tensor:
        """Predicted mask logits at a level's size (N, fQ, h_l, w_l) -> boolean attention mask
        (N*h, fQ, h_l*w_l), True = blocked (sigmoid < 0.5); a query whose mask is empty at
        this level is not blocked anywhere."""
        return self._blocked(level_mask_logits).repeat_interleave(self.num_heads, dim=0)

    @staticmethod
    def _blocked(level_mask_logits: Tensor) -> Tensor:
        """The attention mask shared by all heads: (N, fQ, h_l, w_l) -> (N, fQ, h_l*w_l) bool."""
        blocked = level_mask_logits.sigmoid().flatten(2) < MASK_THRESHOLD  # (N, fQ, h_l*w_l)
        return (blocked & ~blocked.all(-1, keepdim=True)).detach()

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
        all_layer_masks: bool = True,
        pilots: PilotQueries | None = None,
        carry: SlotCarry | None = None,
    ) -> FrameDecoderOutput:
        """Frame queries of the last ``num_frame_query_layers`` predictions (3 in training, 1
        at test). ``all_layer_masks=False`` (inference) computes full-size mask logits for the
        last prediction only (``pred_masks`` then has Dl = 1) and the attention masks from mask
        features resized to each level, which is equal up to float rounding and cheaper.
        ``pilots`` (training, models built with ``mask_pilots``): see the module docstring.

        ``carry`` (an avis option, ``carry_slots``; the previous frame of each of the N frames):
        a slot that held an object there starts from its query of that frame instead of its
        learned one, and attends, in the first layer, where its mask lay there instead of where
        its initial prediction points, so it starts on the same instance (objects move little
        from one frame to the next; a track query, as in TrackFormer). The other slots start as
        in the official decoder. No weights; None = the official decoder."""
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

        all_logits, all_masks, all_queries = [], [], []
        if self.query_selection:
            queries, query_embed, selected = self.select_queries(srcs, pos, sizes)
            if all_layer_masks:  # training: the selected tokens' own prediction, first
                own = self.decoder_norm(selected)  # (N, fQ, C)
                all_logits.append(self.class_embed(own))
                all_masks.append(
                    torch.bmm(self.mask_embed(own), mask_features.flatten(2)).view(
                        n, -1, *mask_features.shape[-2:]
                    )
                )
        else:
            query_embed = self.query_pos().unsqueeze(1).expand(-1, n, -1)  # (fQ, N, C)
            queries = self.query_feat.weight.unsqueeze(1)
        if carry is not None:  # held slots start from their query of the previous frame
            held = carry.held.transpose(0, 1).unsqueeze(-1)  # (fQ, N, 1)
            queries = torch.where(held, carry.queries.transpose(0, 1).to(queries.dtype), queries)
        fusion = self.audio_fusion(srcs, audio, query_embed)
        output = queries + fusion  # (fQ, N, C)
        num_learned = output.shape[0]
        self_mask: Tensor | None = None
        pilot_blocked: list[Tensor] = []  # per level (N, G, h_l*w_l)
        if pilots is not None:
            self._check_pilots(pilots, mask_features, all_layer_masks)
            output, query_embed, self_mask, pilot_blocked = self._add_pilots(
                pilots, output, query_embed, sizes
            )
        pilot_logits: list[Tensor] = []
        pilot_masks: list[Tensor] = []

        level_features: list[Tensor] = []  # mask features at each level's size
        if not all_layer_masks:
            # the CPU kernel of a downscaling interpolate copies an NCHW input to channels-last
            # (and back) on every call: convert once for the three levels (same values)
            source = mask_features
            if source.device.type == "cpu":
                source = source.contiguous(memory_format=torch.channels_last)
            level_features = [
                F.interpolate(source, size=size, mode="bilinear", align_corners=False)
                for size in sizes
            ]
        attn_mask: Tensor | None = None
        for i in range(self.num_layers + 1):  # prediction i = after i decoder layers
            if i > 0:
                lvl = (i - 1) % self.num_feature_levels
                output = self.transformer_cross_attention_layers[i - 1](
                    output, srcs[lvl], memory_mask=attn_mask, pos=pos[lvl], query_pos=query_embed
                )
                output = self.transformer_self_attention_layers[i - 1](
                    output, attn_mask=self_mask, query_pos=query_embed
                )
                output = self.transformer_ffn_layers[i - 1](output)
            decoded = self.decoder_norm(output).transpose(0, 1)  # (N, fQ[+G], C)
            embed = self.mask_embed(decoded)  # (N, fQ[+G], mask_dim)
            logits = self.class_embed(decoded)
            all_logits.append(logits[:, :num_learned])
            all_queries.append(decoded[:, :num_learned])
            last = i == self.num_layers
            if all_layer_masks or last:
                masks = torch.bmm(embed, mask_features.flatten(2)).view(
                    n, -1, *mask_features.shape[-2:]
                )
                if pilots is not None:
                    pilot_logits.append(logits[:, num_learned:])
                    pilot_masks.append(masks[:, num_learned:])  # (N, G, Hm, Wm)
                    masks = masks[:, :num_learned]
                all_masks.append(masks)  # (N, fQ, Hm, Wm)
            if last:
                break
            # attention mask of layer i, at the size of its level; resizing is linear, so the
            # mask embedding applied to resized features equals the resized mask logits
            lvl = i % self.num_feature_levels
            if all_layer_masks:
                level_masks = F.interpolate(
                    masks, size=sizes[lvl], mode="bilinear", align_corners=False
                )
            else:
                level_masks = torch.bmm(embed, level_features[lvl].flatten(2)).view(
                    n, -1, *sizes[lvl]
                )
            if i == 0 and carry is not None:
                carried = F.interpolate(
                    carry.masks.to(level_masks.dtype), size=sizes[lvl], mode="bilinear", align_corners=False
                )  # (N, fQ, h_l, w_l)
                level_masks = torch.where(
                    carry.held[:, :, None, None], carried, level_masks[:, :num_learned]
                )
            blocked = self._blocked(level_masks[:, :num_learned])  # (N, fQ, h_l*w_l)
            if pilots is not None:  # pilots attend where their GT masks lie, at every layer
                blocked = torch.cat([blocked, pilot_blocked[lvl]], dim=1)
            attn_mask = blocked.unsqueeze(1)  # (N, 1, fQ[+G], h_l*w_l), all heads
        return FrameDecoderOutput(
            pred_logits=torch.stack(all_logits),
            pred_masks=torch.stack(all_masks),
            frame_queries=torch.stack(all_queries[-num_frame_query_layers:]),
            audio_fusion=fusion,
            pilot_logits=torch.stack(pilot_logits) if pilots is not None else None,
            pilot_masks=torch.stack(pilot_masks) if pilots is not None else None,
        )

    def _check_pilots(
        self, pilots: PilotQueries, mask_features: Tensor, all_layer_masks: bool
    ) -> None:
        if self.pilot_label_embed is None:
            raise ValueError("pilot queries need a frame decoder built with mask_pilots=True")
        if not all_layer_masks:
            raise ValueError("pilot queries are for training (all_layer_masks=True)")
        n, _, hm, wm = mask_features.shape
        g = pilots.labels.shape[-1]
        expected = {"labels": (n, g), "masks": (n, g, hm, wm), "valid": (n, g)}
        for name, shape in expected.items():
            if tuple(getattr(pilots, name).shape) != shape:
                raise ValueError(
                    f"pilots.{name} must be {shape} (N, G[, Hm, Wm]), "
                    f"got {tuple(getattr(pilots, name).shape)}"
                )

    def _add_pilots(
        self,
        pilots: PilotQueries,
        output: Tensor,  # (fQ, N, C)
        query_embed: Tensor,  # (fQ, N, C)
        sizes: Sequence[tuple[int, int]],
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """The learned queries followed by the G pilots: queries (fQ+G, N, C), position
        embeddings (zero for pilots), the self-attention mask (N, 1, fQ+G, fQ+G) (True =
        blocked: learned queries do not see pilots, no query sees padding pilots) and the
        pilots' cross-attention masks per level (N, G, h_l*w_l)."""
        assert self.pilot_label_embed is not None  # checked by _check_pilots
        num_learned = output.shape[0]
        content = self.pilot_label_embed(pilots.labels).transpose(0, 1)  # (G, N, C)
        content = content.to(output.dtype)
        output = torch.cat([output, content])
        query_embed = torch.cat([query_embed, torch.zeros_like(content)])
        n, g = pilots.valid.shape
        total = num_learned + g
        self_mask = torch.zeros(n, 1, total, total, dtype=torch.bool, device=output.device)
        self_mask[:, :, :num_learned, num_learned:] = True
        self_mask[:, :, :, num_learned:] |= ~pilots.valid.bool()[:, None, None, :]
        # blocked where the resized mask is < 0.5, i.e. where the logit 2 * mask - 1 is < 0
        logits = pilots.masks.to(output.dtype) * 2 - 1
        blocked = [
            self._blocked(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
            for size in sizes
        ]
        return output, query_embed, self_mask, blocked
