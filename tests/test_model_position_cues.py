"""The optional position cues (AVISMConfig.position_cues): soft moments of each frame query's
mask embedded into the tokens the video module reads, and coordinate channels in the video
mask features."""

import sys
from pathlib import Path

import pytest
import torch

from avis.inference.video import InferenceOptions, predict_frames
from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.video_module import coordinate_channels, mask_moments

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL  # noqa: E402


def _model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_avism(get_preset("avism_tiny", **{**SMALL, **kw}))


def test_mask_moments_of_a_rectangle():
    h, w = 20, 40
    logits = torch.full((2, h, w), -40.0)
    logits[0, 4:8, 10:30] = 40.0  # rows 4..7, columns 10..29
    logits[1, :, :] = 40.0  # everything
    m = mask_moments(logits)
    cell_y, cell_x = 2 / h, 2 / w
    torch.testing.assert_close(m[0, 0], torch.tensor(-1 + cell_x * 20.0))  # centre x = 20 cells
    torch.testing.assert_close(m[0, 1], torch.tensor(-1 + cell_y * 6.0))  # centre y = 6 cells
    # spread of k uniform cells = cell * sqrt((k^2 - 1) / 12)
    torch.testing.assert_close(m[0, 2], torch.tensor(cell_x * ((20**2 - 1) / 12) ** 0.5))
    torch.testing.assert_close(m[0, 3], torch.tensor(cell_y * ((4**2 - 1) / 12) ** 0.5))
    torch.testing.assert_close(m[0, 4], torch.tensor(80 / 800).log())
    torch.testing.assert_close(m[1, :2], torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(m[1, 4], torch.tensor(0.0), atol=1e-5, rtol=0)


def test_coordinate_channels():
    grid = coordinate_channels(3, 4, torch.zeros(1))
    assert grid.shape == (1, 4, 3, 4)
    torch.testing.assert_close(grid[0, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(grid[0, 1, :, 0], torch.tensor([-2 / 3, 0.0, 2 / 3]))
    torch.testing.assert_close(grid[0, 2:], grid[0, :2] ** 2)


def test_extra_weights_start_from_the_plain_model():
    plain = _model().eval()
    cued = _model(seed=1, position_cues=True).eval()
    extra = set(cued.state_dict()) - set(plain.state_dict())
    assert extra and all(
        k.startswith(("video_module.mask_position_embed.", "video_module.mask_coords."))
        for k in extra
    )
    missing, unexpected = cued.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == extra and not unexpected
    frames, audio = torch.rand(1, 4, 3, 32, 32) * 255, torch.randn(1, 4, 128)
    with torch.no_grad():  # zero-initialised last layers: the cues add nothing yet
        a, b = plain(frames, audio, [(32, 32)]), cued(frames, audio, [(32, 32)])
    torch.testing.assert_close(a.video.pred_masks, b.video.pred_masks)
    torch.testing.assert_close(a.video.pred_logits, b.video.pred_logits)


def test_tokens_follow_their_masks_and_gradients_reach_the_cues():
    model = _model(position_cues=True).train()
    torch.nn.init.normal_(model.video_module.mask_position_embed.layers[-1].weight)
    frames, audio = torch.rand(2, 3, 3, 32, 32) * 255, torch.randn(2, 3, 128)
    out = model(frames, audio, [(32, 32)] * 2)
    out.video.pred_masks.square().mean().backward()
    for module in (model.video_module.mask_position_embed, model.video_module.mask_coords):
        assert all(float(p.grad.abs().sum()) > 0 for p in module.parameters())
    vm = model.video_module
    queries = torch.randn(2, 5, 16)  # (N, fQ, C)
    masks = torch.full((2, 5, 8, 8), -20.0)
    masks[:, :, :4, :4] = 20.0
    moved = masks.clone()
    moved[1, 3] = masks[1, 3].roll(4, -1)  # frame 1, query 3: same area, moved right
    a, b = vm.add_position_cues(queries, masks), vm.add_position_cues(queries, moved)
    changed = (a != b).any(-1)
    assert changed[1, 3] and int(changed.sum()) == 1


@pytest.mark.parametrize("per_frame", [False, True])
def test_streaming_equals_standard(per_frame: bool):
    model = _model(position_cues=True, per_frame_mask_embed=per_frame).eval()
    for p in (model.video_module.mask_coords.weight, model.video_module.mask_position_embed.layers[-1].weight):
        torch.nn.init.normal_(p)
    frames = (torch.rand(5, 3, 32, 40) * 255).to(torch.uint8)
    audio = torch.randn(5, 128)
    opts = InferenceOptions(run_chunk_size=2, interpolate_chunk_size=3, top_k=4, score_threshold=0.0)
    a = predict_frames(model, frames, audio, options=opts)
    b = predict_frames(model, frames, audio, options=opts, streaming=True)
    assert len(a.scores) == 4
    assert torch.equal(a.scores, b.scores) and torch.equal(a.masks, b.masks)
