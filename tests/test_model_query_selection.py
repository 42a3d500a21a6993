"""The optional query selection of the frame decoder (AVISMConfig.query_selection).

Letters: N frames, S feature tokens of all levels, fQ frame queries, C hidden size.
"""

import sys
from pathlib import Path

import pytest
import torch

from avis.inference.video import InferenceOptions, predict_frames
from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.frame_decoder import FrameDecoder, peaks_first

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, forward_and_loss  # noqa: E402


def _model(**kw):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", **SMALL, **{"query_selection": True, **kw}))


def test_off_by_default_and_which_weights_change():
    plain = build_avism(get_preset("avism_tiny", **SMALL))
    selecting = _model()
    assert not plain.frame_decoder.query_selection and selecting.frame_decoder.query_selection
    keys, new = set(plain.state_dict()), set(selecting.state_dict())
    # the learned query tables go, a token projection and its norm come
    assert keys - new == {"frame_decoder.query_feat.weight", "frame_decoder.query_embed.weight"}
    assert {k.rsplit(".", 1)[0] for k in new - keys} == {
        "frame_decoder.token_proj", "frame_decoder.token_norm",
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="select_queries"):
        selecting.frame_decoder.query_pos()


def test_exclusive_with_anchor_queries():
    with pytest.raises(ValueError, match="exclusive"):
        _model(anchor_queries=True)


def test_peaks_first_gives_a_small_object_a_query_before_a_large_one_a_second():
    h = w = 6
    fine = torch.zeros(h, w)
    fine[0:3, 0:3] = 0.8  # a large object, peak in its centre
    fine[1, 1] = 0.9
    fine[4, 4] = 0.5  # a small one: one token, weaker than every token of the large one
    scores = torch.cat([torch.full((4,), 0.1), fine.flatten()])[None]  # (1, S): 4 coarse + 36 fine
    chosen = set(peaks_first(scores, (h, w), 2)[0].tolist())
    assert chosen == {4 + 1 * w + 1, 4 + 4 * w + 4}
    # plain top-k would give the large object both queries
    assert set(scores.topk(2).indices[0].tolist()) <= {4 + i * w + j for i in range(3) for j in range(3)}
    # ranked by score beyond the peaks, coarse tokens included
    third = peaks_first(scores, (h, w), 3)[0].tolist()
    assert third[2] in {4 + i * w + j for i in range(3) for j in range(3)} - {4 + w + 1}


def test_each_query_is_its_token_at_its_place():
    torch.manual_seed(1)
    dec = FrameDecoder(in_channels=16, hidden_dim=16, num_queries=5, num_classes=3, nheads=2,
                       dim_feedforward=32, dec_layers=1, mask_dim=16, audio_dim=8,
                       query_selection=True)  # fmt: skip
    sizes = [(2, 2), (4, 4), (8, 8)]
    n = 3
    srcs = [torch.randn(h * w, n, 16) for h, w in sizes]
    pos = [torch.randn(h * w, n, 16) for h, w in sizes]
    queries, query_pos, selected = dec.select_queries(srcs, pos, sizes)
    assert queries.shape == query_pos.shape == (5, n, 16) and selected.shape == (n, 5, 16)
    tokens = dec.token_norm(dec.token_proj(torch.cat(srcs).transpose(0, 1)))  # (N, S, C)
    scores = dec.class_embed(dec.decoder_norm(tokens)).softmax(-1)[..., :-1].amax(-1)
    index = peaks_first(scores, sizes[-1], 5)
    all_pos = torch.cat(pos).transpose(0, 1)
    for f in range(n):
        torch.testing.assert_close(queries[:, f], tokens[f, index[f]])
        torch.testing.assert_close(query_pos[:, f], all_pos[f, index[f]])
        assert len(set(index[f].tolist())) == 5  # five different tokens
    # frames are independent: the selection of a frame does not depend on the others
    alone = dec.select_queries([s[:, 1:2] for s in srcs], [p[:, 1:2] for p in pos], sizes)
    torch.testing.assert_close(alone[0][:, 0], queries[:, 1])


def test_too_few_tokens_is_a_clear_error():
    dec = FrameDecoder(in_channels=16, hidden_dim=16, num_queries=30, num_classes=3, nheads=2,
                       dim_feedforward=32, dec_layers=1, mask_dim=16, audio_dim=8,
                       query_selection=True)  # fmt: skip
    sizes = [(1, 1), (2, 2), (4, 4)]  # 21 tokens < 30 queries
    srcs = [torch.randn(h * w, 1, 16) for h, w in sizes]
    with pytest.raises(ValueError, match="needs >= 30 feature tokens"):
        dec.select_queries(srcs, srcs, sizes)


def test_training_supervises_the_selected_tokens_first_and_gradients_reach_them():
    model = _model(per_frame_mask_embed=True).train()
    out, result = forward_and_loss(model)
    layers = model.frame_decoder.num_layers
    assert out.frame.pred_logits.shape[0] == out.frame.pred_masks.shape[0] == layers + 2
    assert torch.isfinite(result.total)
    result.total.backward()
    for module in (model.frame_decoder.token_proj, model.frame_decoder.token_norm):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
    # inference mode: the same decoder predictions without the tokens' own
    model.eval()
    frames = torch.rand(1, 3, 3, 32, 32) * 255
    audio = torch.randn(3, model.video_module.av_proj.in_features)
    with torch.no_grad():
        train_out = model(frames, audio[None], [(32, 32)]).frame
        enc = model.encode_chunk(frames[0], audio, (32, 32))
    assert enc.frame is not None and enc.frame.pred_logits.shape[0] == layers + 1
    torch.testing.assert_close(enc.frame.pred_logits, train_out.pred_logits[1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(enc.frame.pred_masks[-1], train_out.pred_masks[-1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("streaming", [False, True])
def test_inference_does_not_depend_on_chunking(streaming: bool):
    model = _model(per_frame_mask_embed=True).eval()
    t = 4
    frames = (torch.rand(t, 3, 32, 40) * 255).to(torch.uint8)
    audio = torch.randn(t, model.video_module.av_proj.in_features)
    opts = dict(top_k=3, score_threshold=0.0, mask_prob_threshold=0.5)
    one = predict_frames(model, frames, audio, (40, 50), InferenceOptions(run_chunk_size=1, **opts), streaming)
    all_ = predict_frames(model, frames, audio, (40, 50), InferenceOptions(run_chunk_size=t, **opts), streaming)
    assert torch.equal(one.query_indices, all_.query_indices)
    torch.testing.assert_close(one.scores, all_.scores)
