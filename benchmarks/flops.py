"""FLOP counting for the floor: ``torch.utils.flop_counter`` plus closed-form checks.

``count_flops(fn)`` counts the matrix work (convolutions, mm/addmm/bmm, einsum through bmm,
scaled-dot-product attention) that ``fn`` runs; element-wise work, interpolation, gathers and
``embedding_bag`` count 0. That is the right numerator for a floor set by the GEMM rate: the
time no implementation can beat is (matrix FLOPs) / (sustained GEMM FLOP/s).

Closed forms (R50 preset, padded input Hp x Wp) are given for the biggest terms so the
counter can be cross-checked in the benchmark output.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode

FLOPS_PER_MAC = 2
CONV3X3_TAPS = 9
STRIDE4 = 4


def count_flops(fn: Callable[[], object]) -> tuple[int, object]:
    """(matrix FLOPs run by ``fn``, its return value)."""
    counter = FlopCounterMode(display=False)
    with counter:
        result = fn()
    return int(counter.get_total_flops()), result


def stride4_conv3x3_flops(padded_hw: tuple[int, int], conv_dim: int) -> int:
    """The pixel decoder's 3x3 output conv on the stride-4 map, per frame."""
    hm, wm = padded_hw[0] // STRIDE4, padded_hw[1] // STRIDE4
    return FLOPS_PER_MAC * hm * wm * conv_dim * conv_dim * CONV3X3_TAPS


def deform_encoder_flops(
    tokens: int, d_model: int, heads: int, levels: int, points: int, ffn_dim: int, layers: int
) -> int:
    """Linear layers of the deformable encoder per frame (sampling itself is not matrix work).

    Per token and layer: value_proj + output_proj (d x d each), sampling_offsets
    (d x h*nL*P*2), attention_weights (d x h*nL*P), FFN (d x ffn, ffn x d).
    """
    samples = heads * levels * points
    macs = d_model * (2 * d_model + 3 * samples + 2 * ffn_dim)
    return FLOPS_PER_MAC * tokens * macs * layers


def mask_einsum_flops(queries: int, mask_dim: int, padded_hw: tuple[int, int]) -> int:
    """One (queries x mask_dim) . (mask_dim x Hm*Wm) product: mask logits of one frame."""
    hm, wm = padded_hw[0] // STRIDE4, padded_hw[1] // STRIDE4
    return FLOPS_PER_MAC * queries * mask_dim * hm * wm
