"""The shared attention blocks match torch's nn.MultiheadAttention under every mask kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avis.models.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    MultiheadAttention,
    SelfAttentionLayer,
)

C, HEADS, N, L, S = 16, 4, 3, 5, 7


def _reference_mha(ours: MultiheadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(C, HEADS)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref.double()


def _randomise(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize(
    "mask_kind", ["none", "bool2d", "bool3d", "float3d", "kpm", "both", "float_kpm"]
)
def test_mha_matches_torch(mask_kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    ours = MultiheadAttention(C, HEADS)
    _randomise(ours)
    ref = _reference_mha(ours)
    ours = ours.double()
    q = torch.randn(L, N, C, generator=g, dtype=torch.float64)
    k = torch.randn(S, N, C, generator=g, dtype=torch.float64)
    v = torch.randn(S, N, C, generator=g, dtype=torch.float64)
    attn_mask = kpm = None
    bool3 = torch.rand(N * HEADS, L, S, generator=g) < 0.4
    bool3[..., 0] = False  # keep every row attendable (torch would give NaN otherwise)
    kpm_bool = torch.rand(N, S, generator=g) < 0.3
    kpm_bool[:, 0] = False
    if mask_kind == "bool2d":
        attn_mask = bool3[0]
    elif mask_kind == "bool3d":
        attn_mask = bool3
    elif mask_kind == "float3d":
        attn_mask = bool3.double() * -1000.0
    elif mask_kind == "kpm":
        kpm = kpm_bool
    elif mask_kind == "both":
        attn_mask, kpm = bool3, kpm_bool
    elif mask_kind == "float_kpm":
        attn_mask, kpm = bool3.double() * -1000.0, kpm_bool
    got = ours(q, k, v, attn_mask=attn_mask, key_padding_mask=kpm)
    want = ref(q, k, v, attn_mask=attn_mask, key_padding_mask=kpm)[0]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_mha_self_attention_shared_qk_path() -> None:
    ours = MultiheadAttention(C, HEADS)
    _randomise(ours)
    ref = _reference_mha(ours)
    ours = ours.double()
    x = torch.randn(L, N, C, dtype=torch.float64)
    v = torch.randn(L, N, C, dtype=torch.float64)
    torch.testing.assert_close(ours(x, x, v), ref(x, x, v)[0], atol=1e-12, rtol=1e-10)


def test_finite_mask_fully_blocked_row_is_not_nan() -> None:
    ours = MultiheadAttention(C, HEADS)
    x = torch.randn(L, N, C)
    mask = torch.zeros(N * HEADS, L, L)
    mask[:, 0, :] = -1000.0  # row 0 fully blocked by a finite value = uniform attention
    assert torch.isfinite(ours(x, x, x, attn_mask=mask)).all()


def _ref_layers():
    """Plain re-statements of the Mask2Former post-norm / pre-norm layer formulas."""

    def self_layer(m, tgt, pos, pre):
        mha = _reference_mha(m.self_attn)
        x = m.norm(tgt) if pre else tgt
        out = tgt + mha(x + pos, x + pos, x)[0]
        return out if pre else m.norm(out)

    def cross_layer(m, tgt, mem, pos, qpos, pre):
        mha = _reference_mha(m.multihead_attn)
        x = m.norm(tgt) if pre else tgt
        out = tgt + mha(x + qpos, mem + pos, mem)[0]
        return out if pre else m.norm(out)

    return self_layer, cross_layer


@pytest.mark.parametrize("pre", [False, True])
def test_layers_match_formulas(pre: bool) -> None:
    self_ref, cross_ref = _ref_layers()
    sa = SelfAttentionLayer(C, HEADS, normalize_before=pre)
    ca = CrossAttentionLayer(C, HEADS, normalize_before=pre)
    for m in (sa, ca):
        _randomise(m)
        m.double()
    tgt = torch.randn(L, N, C, dtype=torch.float64)
    mem = torch.randn(S, N, C, dtype=torch.float64)
    pos = torch.randn(S, N, C, dtype=torch.float64)
    qpos = torch.randn(L, N, C, dtype=torch.float64)
    torch.testing.assert_close(sa(tgt, query_pos=qpos), self_ref(sa, tgt, qpos, pre))
    torch.testing.assert_close(
        ca(tgt, mem, pos=pos, query_pos=qpos), cross_ref(ca, tgt, mem, pos, qpos, pre)
    )


def test_ffn_and_mlp() -> None:
    ffn = FFNLayer(C, 32)
    x = torch.randn(L, N, C)
    want = ffn.norm(x + ffn.linear2(torch.relu(ffn.linear1(x))))
    torch.testing.assert_close(ffn(x), want)
    mlp = MLP(C, 8, 5, 3)
    assert [k for k in mlp.state_dict()] == [
        f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    ]
    assert mlp(x).shape == (L, N, 5)


@pytest.mark.parametrize("pre", [False, True])
def test_ffn_row_blocks_without_autograd_give_the_same_result(pre: bool) -> None:
    torch.manual_seed(0)
    ffn = FFNLayer(C, 32, normalize_before=pre)
    x = torch.randn(13, 5, C)  # 65 rows
    whole = ffn._block(x)
    ffn.chunk_rows = 7  # 10 blocks, the last one short
    with torch.no_grad():
        blocked = ffn(x)
    torch.testing.assert_close(blocked, whole.detach(), rtol=0, atol=1e-6)
    # with autograd the layer runs whole (blocks would not save memory) and gradients flow
    out = ffn(x.requires_grad_())
    out.sum().backward()
    assert x.grad is not None and out.shape == x.shape


def test_key_names_match_official_layout() -> None:
    assert sorted(SelfAttentionLayer(C, HEADS).state_dict()) == sorted(
        [
            "self_attn.in_proj_weight",
            "self_attn.in_proj_bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "norm.weight",
            "norm.bias",
        ]
    )
    assert "multihead_attn.in_proj_weight" in CrossAttentionLayer(C, HEADS).state_dict()
    assert sorted(FFNLayer(C, 32).state_dict()) == sorted(
        [
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm.weight",
            "norm.bias",
        ]
    )


def test_fully_blocked_boolean_row_gives_bias_not_nan() -> None:
    ours = MultiheadAttention(C, HEADS)
    _randomise(ours)
    x = torch.randn(L, N, C)
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[0] = True
    out = ours(x, x, x, attn_mask=mask)
    torch.testing.assert_close(out[0], ours.out_proj.bias.expand(N, C))
    # the other rows are unaffected by row 0's mask
    torch.testing.assert_close(out[1:], ours(x, x, x)[1:])
