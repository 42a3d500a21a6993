"""The optional pixel-coordinate embedding of the pixel decoder (AVISMConfig.coord_freqs).

Letters: N frames, C conv_dim, h x w a map's size.
"""

import math
import sys
from pathlib import Path

import torch

from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.pixel_decoder import MSDeformAttnPixelDecoder
from avis.models.position import fourier_coordinates

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL  # noqa: E402

IN_CHANNELS = [8, 12, 16, 20]


def test_fourier_coordinates_layout():
    h, w, k = 5, 8, 3
    c = fourier_coordinates(h, w, k)
    assert c.shape == (2 * (1 + 2 * k), h, w)
    x, y = c[0], c[1 + 2 * k]
    assert torch.allclose(x, x[:1].expand(h, -1)) and torch.allclose(y, y[:, :1].expand(-1, w))
    assert torch.allclose(x[0], (torch.arange(w) + 0.5) / w * 2 - 1)  # pixel centres in [-1, 1]
    assert torch.allclose(y[:, 0], (torch.arange(h) + 0.5) / h * 2 - 1)
    for axis in (0, 1 + 2 * k):
        base = c[axis]
        for f in range(k):
            sin, cos = c[axis + 1 + 2 * f], c[axis + 2 + 2 * f]
            assert torch.allclose(sin, torch.sin(math.pi * 2**f * base), atol=1e-6)
            assert torch.allclose(sin**2 + cos**2, torch.ones_like(sin), atol=1e-6)
    flat = c.flatten(1).t()  # (h * w, channels): every pixel has its own code
    assert torch.cdist(flat, flat).add(torch.eye(h * w)).min() > 0.1


def _decoder(coord_freqs: int) -> MSDeformAttnPixelDecoder:
    torch.manual_seed(0)
    return MSDeformAttnPixelDecoder(
        IN_CHANNELS, conv_dim=16, mask_dim=16, num_encoder_layers=1, num_heads=2,
        ffn_dim=32, num_groups=4, coord_freqs=coord_freqs,
    ).eval()  # fmt: skip


def _features(n: int = 2, h: int = 64, w: int = 96) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, c, h // s, w // s, generator=g) for c, s in zip(IN_CHANNELS, (4, 8, 16, 32))]


def test_pixel_decoder_adds_the_embedded_coordinates_to_every_output():
    plain, coord = _decoder(0), _decoder(2)
    missing, unexpected = coord.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"coord_embed.weight", "coord_embed.bias"}
    feats = _features()
    with torch.no_grad():
        a, b = plain(feats), coord(feats)
        # zero-initialised: a fresh model computes what the official module does
        assert torch.equal(a.mask_features, b.mask_features)
        for m_a, m_b in zip(a.multi_scale_features, b.multi_scale_features):
            assert torch.equal(m_a, m_b)
        torch.nn.init.normal_(coord.coord_embed.weight)
        torch.nn.init.normal_(coord.coord_embed.bias)
        b = coord(feats)
        maps = [*zip(a.multi_scale_features, b.multi_scale_features)]
        maps.append((a.stride4_features, b.stride4_features))
        for m_a, m_b in maps:
            h, w = m_a.shape[-2:]
            emb = coord.coord_embed(fourier_coordinates(h, w, 2).unsqueeze(0))  # (1, C, h, w)
            assert torch.allclose(m_b - m_a, emb.expand_as(m_a), atol=1e-5)
        w_mask = coord.mask_features.weight[:, :, 0, 0]  # the mask conv is linear
        emb = coord.coord_embed(fourier_coordinates(*a.mask_features.shape[-2:], 2).unsqueeze(0))
        want = torch.einsum("mc,nchw->nmhw", w_mask, emb)
        assert torch.allclose(b.mask_features - a.mask_features, want.expand_as(want), atol=1e-5)


def test_identical_objects_get_different_mask_features_only_with_coordinates():
    # two identical patches in an otherwise constant map: a translation-equivariant decoder
    # gives them (nearly) the same mask features, the coordinates tell them apart
    plain, coord = _decoder(0), _decoder(3)
    coord.load_state_dict(plain.state_dict(), strict=False)
    torch.nn.init.normal_(coord.coord_embed.weight, std=0.5)
    g = torch.Generator().manual_seed(2)
    patch = [torch.randn(c, 2, 2, generator=g) for c in IN_CHANNELS]
    feats = []
    for c, s, p in zip(IN_CHANNELS, (4, 8, 16, 32), patch):
        f = torch.zeros(1, c, 256 // s, 256 // s)
        h = f.shape[-1]
        for x0 in (h // 4 - 1, 3 * h // 4 - 1):  # two copies, left and right, same row
            f[0, :, h // 2 - 1 : h // 2 + 1, x0 : x0 + 2] = p
        feats.append(f)
    with torch.no_grad():
        outs = [d(feats).mask_features[0] for d in (plain, coord)]  # (M, 64, 64)
    gaps = [(m[:, 32, 15] - m[:, 32, 47]).norm() / m[:, 32, 15].norm() for m in outs]
    assert gaps[1] > 5 * gaps[0]


def test_option_in_the_model_trains_the_embedding():
    plain = build_avism(get_preset("avism_tiny", **SMALL))
    torch.manual_seed(0)
    model = build_avism(get_preset("avism_tiny", coord_freqs=4, **SMALL))
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"pixel_decoder.coord_embed.weight", "pixel_decoder.coord_embed.bias"}
    assert plain.pixel_decoder.coord_freqs == 0
    frames = torch.rand(1, 2, 3, 64, 64) * 255
    audio = torch.randn(1, 2, 128)
    out = model(frames, audio, [(64, 64)])
    loss = out.frame.pred_masks.sigmoid().square().mean() + out.video.pred_masks.square().mean()
    loss.backward()
    grad = model.pixel_decoder.coord_embed.weight.grad
    assert grad is not None and grad.abs().sum() > 0
