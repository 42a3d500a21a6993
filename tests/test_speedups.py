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


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class _Holder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Tiny()


def test_compile_for_inference_falls_back_and_skips_training() -> None:
    from avis.inference.accelerate import _CompiledForward, compile_for_inference, uncompile

    model = _Holder()
    compile_for_inference(model, ["backbone"])
    wrapper = model.backbone.forward
    assert isinstance(wrapper, _CompiledForward)
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no compiler here")

    wrapper.compiled = broken
    x = torch.randn(4, 3)
    want = model.backbone.lin(x)
    model.train()
    assert torch.equal(model.backbone(x), want) and not calls  # training: eager, no compile
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.backbone(x), want)  # compile fails -> eager result
        assert len(calls) == 1 and wrapper.failed
        assert torch.equal(model.backbone(x), want) and len(calls) == 1  # not retried
    uncompile(model)
    assert not isinstance(model.backbone.forward, _CompiledForward)
    assert torch.equal(model.backbone(x), want)


def test_compile_for_inference_rejects_unknown_parts() -> None:
    from avis.inference.accelerate import compile_for_inference

    try:
        compile_for_inference(_Holder(), ["video_module"])
    except ValueError as err:
        assert "video_module" in str(err)
    else:
        raise AssertionError("unknown part accepted")


def test_in_place_encoder_layer_equals_out_of_place_with_gradients() -> None:
    """The deformable encoder layer adds residuals and applies ReLU in place; forward values
    and every gradient equal the out-of-place formula."""
    import torch.nn.functional as F

    from avis.models.pixel_decoder import MSDeformAttnEncoderLayer

    torch.manual_seed(0)
    layer = MSDeformAttnEncoderLayer(C, 32, 2, HEADS, 2, 0.0)  # (C, ffn, levels, heads, points)
    shapes = [(4, 6), (2, 3)]
    s = sum(h * w for h, w in shapes)
    src = torch.randn(N, s, C, requires_grad=True)
    pos = torch.randn(N, s, C)
    ref = torch.rand(N, s, len(shapes), 2)

    def plain(x):
        attn = layer.self_attn(x + pos, ref, x, shapes)
        x = layer.norm1(x + attn)
        return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))

    outputs, grads = [], []
    for fn in (plain, lambda x: layer(x, pos, ref, shapes)):
        layer.zero_grad()
        src.grad = None
        out = fn(src)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([src.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_encoder_layer_query_blocks_equal_one_block() -> None:
    """Without autograd the deformable encoder layer runs over blocks of one image's queries
    sharing one gather table; the result equals the single-block computation, for block sizes
    that do and do not divide the token count."""
    from avis.models.pixel_decoder import MSDeformAttnEncoderLayer

    torch.manual_seed(0)
    layer = MSDeformAttnEncoderLayer(C, 32, 2, HEADS, 2, 0.0).eval()
    with torch.no_grad():  # offsets large enough to sample across levels and off the maps
        layer.self_attn.sampling_offsets.weight.normal_(0.0, 0.5)
        layer.self_attn.attention_weights.weight.normal_(0.0, 0.5)
    shapes = [(4, 6), (2, 3)]
    s = sum(h * w for h, w in shapes)
    src, pos = torch.randn(3, s, C), torch.randn(3, s, C)
    ref = torch.rand(3, s, len(shapes), 2)
    with torch.no_grad():
        layer.block_rows = 0
        whole = layer(src, pos, ref, shapes)
        for rows in (1, 7, 10, s - 1):
            layer.block_rows = rows
            blocked = layer(src, pos, ref, shapes)
            torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-5)  # GEMM rounding
    layer.block_rows = 7  # with autograd: one block (grid_sample sampler), gradients flow
    out = layer(src.requires_grad_(), pos, ref, shapes)
    out.sum().backward()
    assert src.grad is not None
    torch.testing.assert_close(out.detach(), whole, rtol=1e-5, atol=1e-5)


def test_encoder_output_buffers_equal_fresh_outputs() -> None:
    """Without autograd the encoder's layers write their outputs over their inputs, block
    by block; the maps equal those of fresh outputs (one block per layer), and the caller's
    input maps are left untouched."""
    from avis.models.pixel_decoder import MSDeformAttnEncoderLayer, MSDeformAttnTransformer

    torch.manual_seed(0)
    encoder = MSDeformAttnTransformer(C, HEADS, 3, 32, 0.0, 2, 2).eval()  # 3 layers
    with torch.no_grad():  # queries (src + pos) steer the sampling, as in a trained model
        for layer in encoder.encoder.layers:
            layer.self_attn.sampling_offsets.weight.normal_(0.0, 0.5)
            layer.self_attn.attention_weights.weight.normal_(0.0, 0.5)
    srcs = [torch.randn(N, C, 4, 6), torch.randn(N, C, 2, 3)]
    pos = [torch.randn(N, C, 4, 6), torch.randn(N, C, 2, 3)]
    kept = [s.clone() for s in srcs]
    default = MSDeformAttnEncoderLayer.block_rows
    with torch.no_grad():
        try:
            MSDeformAttnEncoderLayer.block_rows = 0
            fresh = encoder(srcs, pos)
            MSDeformAttnEncoderLayer.block_rows = 7
            buffered = encoder(srcs, pos)
        finally:
            MSDeformAttnEncoderLayer.block_rows = default
    for a, b in zip(fresh, buffered):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)  # GEMM rounding of the blocks
    assert all(torch.equal(s, k) for s, k in zip(srcs, kept))
    layer = encoder.encoder.layers[0]
    with torch.no_grad():
        layer.block_rows = 7
        src, ref = torch.randn(N, 30, C), torch.rand(N, 30, 2, 2)
        try:
            layer(src, src, ref, [(4, 6), (2, 3)], out=torch.empty(N, 29, C))
        except ValueError as err:
            assert "out has shape" in str(err)
        else:
            raise AssertionError("an out buffer of the wrong shape must be rejected")


def test_in_place_residuals_equal_out_of_place_with_gradients() -> None:
    """ResNet blocks add their shortcut and the FPN its upsampled map in place; outputs and
    every gradient equal the out-of-place formulas (trainable batch norm, training mode)."""
    import torch.nn.functional as F

    from avis.models.backbones.resnet import BottleneckBlock

    torch.manual_seed(0)
    block = BottleneckBlock(8, 4, 16, 2, "BN", stride_in_1x1=False).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)

    def plain(inp):
        out = F.relu(block.conv1(inp))
        out = F.relu(block.conv2(out))
        return F.relu(block.conv3(out) + block.shortcut(inp))

    outputs, grads = [], []
    for fn in (plain, block):
        block.zero_grad()
        x.grad = None
        out = fn(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in block.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_ffn_buffer_and_pixel_coordinates_keep_the_encoder_layer_output() -> None:
    """A query block's FFN hidden rows written into a shared buffer give bit-identical
    outputs; sampling from pixel coordinates taken straight from the offsets equals the
    normalised-locations formula up to float rounding."""
    from avis.models import msdeform as md
    from avis.models.pixel_decoder import MSDeformAttnEncoderLayer

    torch.manual_seed(0)
    layer = MSDeformAttnEncoderLayer(C, 32, 2, HEADS, 2, 0.0).eval()
    with torch.no_grad():
        layer.self_attn.sampling_offsets.weight.normal_(0.0, 0.5)
        layer.self_attn.attention_weights.weight.normal_(0.0, 0.5)
    shapes = [(4, 6), (2, 3)]
    s = sum(h * w for h, w in shapes)
    src, pos, ref = torch.randn(1, s, C), torch.randn(1, s, C), torch.rand(1, s, len(shapes), 2)
    with torch.no_grad():
        table = md.GatherTable.build(layer.self_attn.project_value(src), shapes)
        fresh = layer._block(src, pos, ref, table, shapes)
        buffer = torch.full((s + 3, 32), float("nan"))  # larger than needed, stale contents
        assert torch.equal(layer._block(src, pos, ref, table, shapes, buffer), fresh)
        # the attention alone, from normalised locations (the grid_sample convention)
        attn = layer.self_attn
        query = src + pos
        offsets = attn.sampling_offsets(query).view(1, s, HEADS, len(shapes), 2, 2)
        weights = attn.attention_weights(query).view(1, s, HEADS, -1).softmax(-1)
        weights = weights.view(1, s, HEADS, len(shapes), 2)
        sizes = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32).view(-1, 1, 2)
        locations = ref[:, :, None, :, None, :] + offsets / sizes
        want = attn.output_proj(md.sample_with_gather(table, shapes, locations, weights))
        torch.testing.assert_close(attn.attend(query, ref, table, shapes), want, rtol=1e-5, atol=1e-5)
