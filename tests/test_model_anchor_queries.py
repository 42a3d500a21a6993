"""The optional anchored queries and position cues (AVISMConfig.anchor_queries, position_cues).

Letters: T frames, cQ video queries, fQ frame queries, C hidden size, Hm x Wm mask grid.
"""

import sys
from pathlib import Path

import pytest
import torch

from avis.inference.video import InferenceOptions, predict_frames
from avis.losses.matcher import HungarianMatcher, MatchTarget
from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.position import query_anchors, sine_point_encoding, sine_position_encoding
from avis.models.video_module import mask_moments

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, forward_and_loss  # noqa: E402

OPTIONS = dict(anchor_queries=True, position_cues=True)


def _model(**kw):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", **SMALL, **{**OPTIONS, **kw}))


def test_off_by_default_and_which_weights_change():
    plain = build_avism(get_preset("avism_tiny", **SMALL))
    anchored = _model(position_cues=False)
    cued = _model(anchor_queries=False)
    assert not plain.frame_decoder.anchor_queries and not plain.video_module.anchor_queries
    assert not plain.video_module.position_cues
    keys, anchored_keys, cued_keys = set(plain.state_dict()), set(anchored.state_dict()), set(cued.state_dict())
    # anchored: the learned query-position tables of both levels become anchor MLPs
    assert keys - anchored_keys == {"frame_decoder.query_embed.weight", "video_module.query_embed.weight"}
    assert {k.rsplit(".layers", 1)[0] for k in anchored_keys - keys} == {
        "frame_decoder.anchor_embed", "video_module.anchor_embed",
    }  # fmt: skip
    # position cues only add weights
    assert keys < cued_keys
    assert all(k.startswith("video_module.mask_position_embed.") for k in cued_keys - keys)


def test_anchor_code_is_the_pixel_code_at_that_place():
    h, w, f = 6, 10, 8
    pixels = sine_position_encoding(h, w, f)  # (2F, H, W); pixel (i, j) sits at ((j+1)/W, (i+1)/H)
    for i, j in [(0, 0), (2, 7), (5, 9)]:
        point = torch.tensor([[(j + 1) / w, (i + 1) / h]])
        torch.testing.assert_close(sine_point_encoding(point, f)[0], pixels[:, i, j])


def test_each_level_places_its_queries_at_the_matchers_anchors():
    model = _model()
    for level, count in ((model.frame_decoder, 4), (model.video_module, 3)):
        pos = level.query_pos()
        assert pos.shape == (count, 16)
        assert len({tuple(row) for row in pos.round(decimals=5).tolist()}) == count
        code = sine_point_encoding(query_anchors(count), 8)
        torch.testing.assert_close(pos, level.anchor_embed(code))
    # the matcher prefers, for two identical targets, the one nearer each query's anchor
    anchors = query_anchors(3)  # x = 1/6, 3/6, 5/6
    masks = torch.zeros(2, 1, 4, 12, dtype=torch.bool)
    masks[0, 0, 1:3, 9:11] = True  # near anchor 2
    masks[1, 0, 1:3, 1:3] = True  # near anchor 0
    assert anchors[0, 0] < anchors[2, 0]
    matcher = HungarianMatcher(num_points=None, anchor_cost=1.0)
    logits = torch.zeros(1, 3, 3)
    pred, tgt = matcher(logits, torch.zeros(1, 3, 1, 4, 12), [MatchTarget(torch.tensor([0, 0]), masks)])[0]
    assert dict(zip(tgt.tolist(), pred.tolist())) == {0: 2, 1: 0}


def test_mask_moments():
    logits = torch.full((2, 8, 16), -30.0)
    logits[0, 2:4, 0:4] = 30.0  # centre x 2/16, y 3/8
    logits[1, :, 8:] = 30.0  # right half
    m = mask_moments(logits)
    assert m.shape == (2, 5)
    torch.testing.assert_close(m[0, :2], torch.tensor([2 / 16, 3 / 8]), atol=1e-4, rtol=0)
    torch.testing.assert_close(m[1, :2], torch.tensor([12 / 16, 0.5]), atol=1e-4, rtol=0)
    assert m[1, 2] > m[0, 2] and m[1, 3] > m[0, 3]  # larger spread
    torch.testing.assert_close(m[:, 4].exp(), torch.tensor([8 / 128, 0.5]), atol=1e-4, rtol=0)


def test_position_cues_start_at_zero_and_then_tell_where_each_mask_lies():
    vm = _model().video_module
    queries = torch.randn(1, 2, 4, 16)  # (Lf, N, fQ, C)
    left = torch.full((1, 2, 4, 8, 8), -30.0)
    left[..., :, :3] = 30.0
    right = left.flip(-1)
    torch.testing.assert_close(vm.add_position_cues(queries, left), queries)  # zero-initialised
    torch.nn.init.normal_(vm.mask_position_embed.layers[-1].weight)
    a, b = vm.add_position_cues(queries, left), vm.add_position_cues(queries, right)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, vm.add_position_cues(queries, left.clone()))
    # the cue is of the mask's place only: the query's content passes unchanged
    torch.testing.assert_close(a - queries, vm.add_position_cues(torch.zeros_like(queries), left))


def test_training_forward_loss_and_gradients_reach_the_new_weights():
    model = _model(per_frame_mask_embed=True).train()
    torch.nn.init.normal_(model.video_module.mask_position_embed.layers[-1].weight, std=0.1)
    _, result = forward_and_loss(model)
    assert torch.isfinite(result.total)
    result.total.backward()
    for module in (model.frame_decoder.anchor_embed, model.video_module.anchor_embed,
                   model.video_module.mask_position_embed):  # fmt: skip
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("streaming", [False, True])
def test_inference_reads_the_cued_frame_queries(streaming: bool):
    model = _model(per_frame_mask_embed=True).eval()
    torch.nn.init.normal_(model.video_module.mask_position_embed.layers[-1].weight, std=0.5)
    t = 4
    frames = (torch.rand(t, 3, 32, 40) * 255).to(torch.uint8)
    audio = torch.randn(t, model.video_module.av_proj.in_features)
    padded = torch.nn.functional.pad(frames.float(), (0, 24))  # to 32 x 64
    with torch.no_grad():
        enc = model.encode_chunk(padded, audio, (32, 40))
        assert enc.frame is not None and enc.frame_queries is not None
        expected = model.video_module.add_position_cues(enc.frame.frame_queries, enc.frame.pred_masks)
        torch.testing.assert_close(enc.frame_queries, expected[-1])
        # the training forward (eval mode) hands the video module the same tokens
        out = model(padded[None], audio[None], [(32, 40)])
        decoded = model.decode_video(enc.frame_queries, audio)
        torch.testing.assert_close(out.video.pred_logits, decoded.pred_logits, atol=1e-5, rtol=1e-4)
    opts = dict(run_chunk_size=2, top_k=3, score_threshold=0.0, mask_prob_threshold=0.5)
    one = predict_frames(model, frames, audio, (40, 50), InferenceOptions(interpolate_chunk_size=1, **opts), streaming)
    all_ = predict_frames(model, frames, audio, (40, 50), InferenceOptions(interpolate_chunk_size=t, **opts), streaming)
    assert torch.equal(one.query_indices, all_.query_indices)
    torch.testing.assert_close(one.scores, all_.scores)
