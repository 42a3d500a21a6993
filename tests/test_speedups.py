"""Speed-ups that must not change results (issue 8): each fast path equals the plain one."""

import torch

from avis.models.layers import MultiheadAttention

N, HEADS, L, S, C = 2, 4, 5, 7, 16


def test_head_shared_4d_mask_equals_per_head_mask() -> None:
    torch.manual_seed(0)
    attn = MultiheadAttention(C, HEADS).eval()
    q, kv = torch.randn(L, N, C), torch.randn(S, N, C)
    blocked = torch.rand(N, L, S) < 0.4
    blocked[0, 1] = True  # a fully blocked row
    with torch.no_grad():
        per_head = attn(q, kv, kv, attn_mask=blocked.repeat_interleave(HEADS, dim=0))
        shared = attn(q, kv, kv, attn_mask=blocked.unsqueeze(1))
        full = attn(q, kv, kv, attn_mask=blocked.unsqueeze(1).expand(N, HEADS, L, S))
    assert torch.equal(per_head, shared)
    assert torch.equal(per_head, full)


def test_4d_mask_with_wrong_shape_is_rejected() -> None:
    attn = MultiheadAttention(C, HEADS)
    q = torch.randn(L, N, C)
    try:
        attn(q, q, q, attn_mask=torch.zeros(N, 3, L, L, dtype=torch.bool))
    except ValueError as err:
        assert "(N|1, h|1, L, S)" in str(err)
    else:
        raise AssertionError("a (N, 3, L, L) mask with 4 heads must be rejected")


def test_channels_last_downscale_equals_contiguous() -> None:
    x = torch.randn(2, 8, 24, 40)
    for size in ((3, 5), (6, 10), (12, 20)):
        plain = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        cl = torch.nn.functional.interpolate(
            x.contiguous(memory_format=torch.channels_last),
            size=size,
            mode="bilinear",
            align_corners=False,
        )
        assert torch.equal(plain, cl)
