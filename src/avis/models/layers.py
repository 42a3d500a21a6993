"""Transformer building blocks shared by the frame decoder and the video module.

Parameter names mirror the official Mask2Former / VITA / AVISM layers, so an official
state dict maps onto these modules by prefix only:
``self_attn.{in_proj_weight,in_proj_bias,out_proj.*}``, ``multihead_attn.*``, ``norm.*``,
``linear1.*``, ``linear2.*``, ``layers.{i}.*``.

Letters: L query tokens, S key/value tokens, N batch, C channels, h heads, d = C / h.
All sequences are sequence-first, like ``nn.MultiheadAttention(batch_first=False)``.

Masks follow the ``nn.MultiheadAttention`` conventions:
- ``attn_mask``: (L, S) or (N*h, L, S); boolean (True = blocked) or float (added to the
  attention logits, e.g. -1000 for blocked pairs). Also (N|1, h|1, L, S), e.g. one mask
  shared by all heads as (N, 1, L, S) (8x less mask work than repeating it per head).
- ``key_padding_mask``: (N, S); boolean (True = padded key) or float (added).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avis.models.position import query_anchors, sine_point_encoding

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


def _merge_masks(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    n: int,
    heads: int,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """One SDPA mask from the two nn.MultiheadAttention-style masks.

    Returns None, a boolean (N|1, h|1, L, S) mask with True = may attend, or a float
    additive mask of the same shape.
    """
    masks: list[Tensor] = []
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            masks.append(attn_mask.view(1, 1, q_len, k_len))
        elif attn_mask.dim() == 3:
            masks.append(attn_mask.view(n, heads, q_len, k_len))
        elif (
            attn_mask.dim() == 4
            and attn_mask.shape[0] in (1, n)
            and attn_mask.shape[1] in (1, heads)
            and attn_mask.shape[2:] == (q_len, k_len)
        ):
            masks.append(attn_mask)
        else:
            raise ValueError(
                "attn_mask must be (L, S), (N*h, L, S) or (N|1, h|1, L, S) with "
                f"N={n}, h={heads}, L={q_len}, S={k_len}; got shape {tuple(attn_mask.shape)}"
            )
    if key_padding_mask is not None:
        if key_padding_mask.shape != (n, k_len):
            raise ValueError(
                f"key_padding_mask must be (N, S) = {(n, k_len)}, "
                f"got shape {tuple(key_padding_mask.shape)}"
            )
        masks.append(key_padding_mask.view(n, 1, 1, k_len))
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        blocked = masks[0]
        for m in masks[1:]:
            blocked = blocked | m
        return ~blocked
    additive = None
    for m in masks:
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf"))
        else:
            m = m.to(dtype)
        additive = m if additive is None else additive + m
    return additive


class MultiheadAttention(nn.Module):
    """Sequence-first multi-head attention with ``nn.MultiheadAttention``'s parameter names.

    Computed with ``scaled_dot_product_attention`` (numerically equivalent to the reference
    module up to float32 rounding). Returns only the attended values, never the weights.
    One difference: a query row whose keys are all blocked by boolean masks attends to nothing
    (its output is ``out_proj.bias``) where ``nn.MultiheadAttention`` returns NaN. A finite
    additive mask (e.g. -1000) behaves exactly like the reference.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Tensor,  # (L, N, C)
        key: Tensor,  # (S, N, C)
        value: Tensor,  # (S, N, C)
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:  # (L, N, C)
        q_len, n, c = query.shape
        k_len = key.shape[0]
        h = self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:
            q, k = F.linear(query, w[: 2 * c], b[: 2 * c]).chunk(2, dim=-1)
        else:
            q = F.linear(query, w[:c], b[:c])
            k = F.linear(key, w[c : 2 * c], b[c : 2 * c])
        v = F.linear(value, w[2 * c :], b[2 * c :])
        # (L, N, C) -> (N, h, L, d)
        q = q.view(q_len, n, h, c // h).permute(1, 2, 0, 3)
        k = k.view(k_len, n, h, c // h).permute(1, 2, 0, 3)
        v = v.view(k_len, n, h, c // h).permute(1, 2, 0, 3)
        mask = _merge_masks(attn_mask, key_padding_mask, n, h, q_len, k_len, q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (N, h, L, d)
        out = out.permute(2, 0, 1, 3).reshape(q_len, n, c)
        return self.out_proj(out)


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def _xavier_init(module: nn.Module) -> None:
    """Mask2Former's init: xavier-uniform on every matrix."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Residual self-attention + LayerNorm (post-norm by default).

    Query and key get ``query_pos`` added; the value does not.
    """

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(
        self,
        tgt: Tensor,  # (L, N, C)
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        query_pos: Tensor | None = None,  # (L, N, C) or broadcastable
    ) -> Tensor:  # (L, N, C)
        x = self.norm(tgt) if self.normalize_before else tgt
        qk = _with_pos(x, query_pos)
        out = self.self_attn(qk, qk, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Residual cross-attention + LayerNorm (post-norm by default).

    Query = tgt + query_pos, key = memory + pos, value = memory.
    """

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ) -> None:
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(
        self,
        tgt: Tensor,  # (L, N, C)
        memory: Tensor,  # (S, N, C)
        memory_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,  # (S, N, C) or broadcastable
        query_pos: Tensor | None = None,  # (L, N, C) or broadcastable
    ) -> Tensor:  # (L, N, C)
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(
            _with_pos(x, query_pos),
            _with_pos(memory, pos),
            memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Residual two-layer feed-forward block + LayerNorm (post-norm by default)."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]
        self.normalize_before = normalize_before
        _xavier_init(self)

    # Without autograd, inputs of more rows than this are processed in row blocks, so the
    # (rows, dim_feedforward) hidden tensor stays small: the video module applies its FFNs to
    # all T x Q tokens of a video at once (two 491 MB temporaries at T = 600, R50). Every
    # operation is row-wise, so the result is the same. 0 = never split.
    chunk_rows: int = 8192

    def forward(self, tgt: Tensor) -> Tensor:  # (..., C) -> (..., C)
        rows = tgt.numel() // max(tgt.shape[-1], 1)
        if self.chunk_rows <= 0 or rows <= self.chunk_rows or torch.is_grad_enabled():
            return self._block(tgt)
        flat = tgt.reshape(rows, tgt.shape[-1])
        out = torch.empty_like(flat)
        for start in range(0, rows, self.chunk_rows):
            out[start : start + self.chunk_rows] = self._block(flat[start : start + self.chunk_rows])
        return out.view(tgt.shape)

    def _block(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.linear2(self.dropout(self.activation(self.linear1(x))))
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:  # (..., input_dim) -> (..., output_dim)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def anchor_embedding(mlp: MLP, num_queries: int) -> Tensor:
    """(Q, C) position embeddings of Q queries placed at `query_anchors`: ``mlp`` (whose input
    size is C) of the sine code the pixels at each anchor get as keys (`sine_point_encoding`)."""
    first = cast(nn.Linear, mlp.layers[0])
    anchors = query_anchors(num_queries, first.weight.device)
    code = sine_point_encoding(anchors, first.in_features // 2)  # (Q, C)
    return mlp(code.to(first.weight.dtype))
