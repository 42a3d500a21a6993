"""Deformable attention against a float64 loop-by-loop reference with explicit bilinear reads."""

from __future__ import annotations

import math

import pytest
import torch

from avis.models.msdeform import (
    MSDeformAttn,
    default_sampling_method,
    ms_deform_attn_sample,
    sample_with_canvas,
    sample_with_gather,
    sample_with_grid_sample,
)

SHAPES = [(3, 4), (2, 5), (1, 2)]


def _bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img (d, H, W); (x, y) normalised to [0, 1]; pixel centres at (j + 0.5) / W."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                wgt = (1 - abs(px - xx)) * (1 - abs(py - yy))
                out += wgt * img[:, yy, xx]
    return out


def _reference(value, shapes, locations, weights):
    n, s, heads, d = value.shape
    lq = locations.shape[1]
    starts = [0]
    for hh, ww in shapes:
        starts.append(starts[-1] + hh * ww)
    out = torch.zeros(n, lq, heads, d, dtype=value.dtype)
    for b in range(n):
        for q in range(lq):
            for m in range(heads):
                for lvl, (hh, ww) in enumerate(shapes):
                    img = value[b, starts[lvl] : starts[lvl + 1], m].t().reshape(d, hh, ww)
                    for p in range(locations.shape[4]):
                        x, y = locations[b, q, m, lvl, p].tolist()
                        out[b, q, m] += weights[b, q, m, lvl, p] * _bilinear_zero_pad(img, x, y)
    return out.reshape(n, lq, heads * d)


@pytest.mark.parametrize("method", ["grid_sample", "gather", "canvas", "auto"])
def test_sampling_matches_loop_reference_float64(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    n, heads, d, lq, points = 2, 3, 4, 5, 2
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(n, s, heads, d, generator=g, dtype=torch.float64)
    # locations in [-0.3, 1.3]: exercises borders and fully-outside points
    locations = torch.rand(n, lq, heads, len(SHAPES), points, 2, generator=g, dtype=torch.float64)
    locations = locations * 1.6 - 0.3
    locations[0, 0, 0, 0, 0] = torch.tensor([1e6, -1e6], dtype=torch.float64)  # far outside
    weights = torch.rand(n, lq, heads, len(SHAPES) * points, generator=g, dtype=torch.float64)
    weights = weights.softmax(-1).view(n, lq, heads, len(SHAPES), points)
    got = ms_deform_attn_sample(value, SHAPES, locations, weights, method=method)
    want = _reference(value, SHAPES, locations, weights)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_module_matches_reference_float64() -> None:
    g = torch.Generator().manual_seed(1)
    c, heads, points = 8, 2, 3
    attn = MSDeformAttn(c, n_levels=len(SHAPES), n_heads=heads, n_points=points).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.5, generator=g)
    n, lq = 2, 4
    s = sum(h * w for h, w in SHAPES)
    query = torch.randn(n, lq, c, generator=g, dtype=torch.float64)
    inp = torch.randn(n, s, c, generator=g, dtype=torch.float64)
    ref_pts = torch.rand(n, lq, len(SHAPES), 2, generator=g, dtype=torch.float64)
    pad = torch.zeros(n, s, dtype=torch.bool)
    pad[1, -3:] = True
    got = attn(query, ref_pts, inp, SHAPES, input_padding_mask=pad)

    value = attn.value_proj(inp).masked_fill(pad[..., None], 0.0).view(n, s, heads, c // heads)
    offsets = attn.sampling_offsets(query).view(n, lq, heads, len(SHAPES), points, 2)
    weights = attn.attention_weights(query).view(n, lq, heads, -1).softmax(-1)
    weights = weights.view(n, lq, heads, len(SHAPES), points)
    locations = ref_pts[:, :, None, :, None, :].expand(n, lq, heads, len(SHAPES), points, 2).clone()
    for lvl, (hh, ww) in enumerate(SHAPES):
        locations[:, :, :, lvl, :, 0] += offsets[:, :, :, lvl, :, 0] / ww
        locations[:, :, :, lvl, :, 1] += offsets[:, :, :, lvl, :, 1] / hh
    want = attn.output_proj(_reference(value, SHAPES, locations, weights))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_init_and_gradients() -> None:
    attn = MSDeformAttn(16, n_levels=2, n_heads=4, n_points=2)
    # default init: every head looks in its own direction, uniform attention
    bias = attn.sampling_offsets.bias.view(4, 2, 2, 2)
    assert torch.equal(bias[:, 0], bias[:, 1])
    assert torch.equal(bias[:, :, 1], 2 * bias[:, :, 0])
    shapes = [(4, 4), (2, 2)]
    query = torch.randn(2, 20, 16)
    ref_pts = torch.rand(2, 20, 2, 2)
    out = attn(query, ref_pts, query, shapes)
    out.square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_samplers_agree_in_float32_and_gradients_flow_through_grid_sample() -> None:
    g = torch.Generator().manual_seed(2)
    shapes = [(6, 10), (12, 20), (24, 40)]
    n, heads, d, lq, points = 2, 4, 8, 50, 4
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, d, generator=g)
    locations = torch.rand(n, lq, heads, len(shapes), points, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(n, lq, heads, len(shapes), points, generator=g)
    a = sample_with_gather(value, shapes, locations, weights)
    b = sample_with_grid_sample(value, shapes, locations, weights)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # "auto" keeps autograd working (grid_sample path) and matches the gather path
    locations.requires_grad_()
    c = ms_deform_attn_sample(value, shapes, locations, weights)
    c.sum().backward()
    assert locations.grad is not None and locations.grad.abs().sum() > 0
    torch.testing.assert_close(c.detach(), a, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        ms_deform_attn_sample(value, shapes, locations, weights, method="cuda")


def test_gather_survives_nan_locations() -> None:
    value = torch.randn(1, 6, 1, 2)
    locations = torch.full((1, 2, 1, 1, 1, 2), float("nan"))
    weights = torch.ones(1, 2, 1, 1, 1)
    out = sample_with_gather(value, [(2, 3)], locations, weights)
    assert out.shape == (1, 2, 2)


def test_canvas_path_is_chosen_on_gpus_and_matches_in_float32_with_gradients(monkeypatch) -> None:
    assert default_sampling_method(torch.device("cpu"), needs_grad=False) == "gather"
    assert default_sampling_method(torch.device("cpu"), needs_grad=True) == "grid_sample"
    assert default_sampling_method(torch.device("cuda"), needs_grad=False) == "canvas"
    assert default_sampling_method(torch.device("cuda"), needs_grad=True) == "canvas"
    g = torch.Generator().manual_seed(3)
    shapes = [(6, 10), (12, 20), (24, 40)]
    n, heads, d, lq, points = 2, 4, 8, 50, 4
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, d, generator=g)
    locations = torch.rand(n, lq, heads, len(shapes), points, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(n, lq, heads, len(shapes), points, generator=g)
    grads = {}
    outs = {}
    for method in ("grid_sample", "canvas"):
        v, loc = value.clone().requires_grad_(), locations.clone().requires_grad_()
        outs[method] = ms_deform_attn_sample(v, shapes, loc, weights, method=method)
        outs[method].square().sum().backward()
        grads[method] = (v.grad, loc.grad)
    # fp32 rounding: the canvas adds each level's column offset to the pixel coordinates
    torch.testing.assert_close(outs["canvas"], outs["grid_sample"], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(grads["canvas"][0], grads["grid_sample"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads["canvas"][1], grads["grid_sample"][1], atol=2e-3, rtol=1e-3)
    # images taken in groups (a small byte budget) give the same values
    monkeypatch.setattr("avis.models.msdeform.CANVAS_BYTES", 1)
    torch.testing.assert_close(sample_with_canvas(value, shapes, locations, weights), outs["canvas"].detach())


def test_module_on_the_forced_gpu_path_matches_the_cpu_path(monkeypatch) -> None:
    torch.manual_seed(4)
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=2)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.5)
    shapes = [(6, 10), (3, 5), (2, 3)]
    src = torch.randn(2, sum(h * w for h, w in shapes), 16)
    ref = torch.rand(2, src.shape[1], 3, 2)
    with torch.no_grad():
        cpu = attn(src, ref, src, shapes)  # gather
        monkeypatch.setattr("avis.models.msdeform.default_sampling_method", lambda device, needs_grad: "canvas")
        gpu = attn(src, ref, src, shapes)
    assert not torch.equal(cpu, gpu)  # really another computation
    torch.testing.assert_close(gpu, cpu, atol=1e-5, rtol=1e-5)


def test_canvas_keeps_float32_coordinates_for_low_precision_values() -> None:
    g = torch.Generator().manual_seed(5)
    shapes = [(20, 40), (10, 20), (5, 10)]
    n, heads, d, lq, points = 1, 2, 4, 30, 3
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, d, generator=g)
    locations = torch.rand(n, lq, heads, len(shapes), points, 2, generator=g)
    weights = torch.rand(n, lq, heads, len(shapes), points, generator=g)
    want = sample_with_canvas(value.bfloat16().float(), shapes, locations, weights)
    got = sample_with_canvas(value.bfloat16(), shapes, locations, weights)
    assert got.dtype == torch.float32
    # only the values were rounded: the same samples of the same bf16 values
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
