"""The optional mask-quality prediction of the video queries (AVISMConfig.mask_quality).

Letters: B clips, T frames, cQ video queries, Lv / Lf video-decoder / frame-query layers,
Hm x Wm prediction grid.
"""

import sys
from pathlib import Path

import torch

from avis.inference.video import InferenceOptions, InferenceTrace, frames_encoder, predict_video
from avis.losses import AVISMCriterion
from avis.losses.matcher import MatchTarget
from avis.models.avism import build_avism
from avis.models.config import get_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, forward_and_loss  # noqa: E402


def _model(**kw):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", mask_quality=True, **SMALL, **kw))


def test_off_by_default_and_only_extra_weights():
    plain = build_avism(get_preset("avism_tiny", **SMALL))
    quality = _model()
    extra = set(quality.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("video_module.quality_embed.") for k in extra)
    assert set(plain.state_dict()) <= set(quality.state_dict())
    frames = torch.rand(1, 2, 3, 32, 32) * 255
    audio = torch.randn(1, 2, plain.video_module.av_proj.in_features)
    assert plain.eval()(frames, audio, [(32, 32)]).video.pred_quality is None


def test_quality_loss_target_is_the_masks_iou():
    """One query predicts the union of two targets, the other one target exactly: the loss is
    lowest where each predicted IoU logit equals the actual IoU (1/2 and 1)."""
    crit = AVISMCriterion(3, num_points=None)
    t, h, w = 2, 4, 6
    gt = torch.zeros(2, t, h, w, dtype=torch.bool)
    gt[0, :, :, :2] = True
    gt[1, :, :, 4:] = True
    masks = torch.full((1, 2, t, h, w), -5.0)  # (I, Q, T, Hm, Wm)
    masks[0, 0][gt[0] | gt[1]] = 5.0  # query 0: union of both targets -> IoU 1/2 with target 0
    masks[0, 1][gt[1]] = 5.0  # query 1: exactly target 1 -> IoU 1
    item = MatchTarget(labels=torch.tensor([0, 1]), masks=gt)
    match = (torch.tensor([0, 1]), torch.tensor([0, 1]))

    def loss(logit0: float, logit1: float) -> float:
        pred = torch.tensor([[logit0, logit1]])
        return float(crit.quality_loss(pred, masks, [item], [match], 2.0))

    best = loss(0.0, 20.0)  # sigmoid(0) = 1/2, sigmoid(20) ~ 1
    for other in ((2.0, 20.0), (-2.0, 20.0), (0.0, 0.0)):
        assert best < loss(*other)
    pred = torch.zeros(1, 2, requires_grad=True)
    crit.quality_loss(pred, masks, [item], [match], 2.0).backward()
    assert abs(float(pred.grad[0, 0])) < 1e-6  # at the optimum for query 0
    assert float(pred.grad[0, 1]) < 0  # query 1's IoU (1) is above sigmoid(0): push up


def test_training_loss_has_a_quality_term_with_gradients():
    model = _model().train()
    out, result = forward_and_loss(model)
    assert out.video.pred_quality.shape == (2, 2, 2, 3)  # (Lv, Lf, B, cQ)
    assert "video_quality" in result.terms and torch.isfinite(result.terms["video_quality"])
    result.total.backward()
    grads = [p.grad for p in model.video_module.quality_embed.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_inference_scores_are_scaled_by_the_predicted_iou():
    model = _model().eval()
    last = model.video_module.quality_embed.layers[-1]
    with torch.no_grad():  # a fixed predicted IoU: sigmoid(bias) for every query
        last.weight.zero_()
        last.bias.fill_(-1.0)
    t = 3
    frames = (torch.rand(t, 3, 32, 40) * 255).to(torch.uint8)
    audio = torch.randn(t, model.video_module.av_proj.in_features)
    opts = InferenceOptions(run_chunk_size=2, top_k=6, score_threshold=0.0)

    def run():
        trace = InferenceTrace()
        encode, size, padded = frames_encoder(model, frames, audio)
        return predict_video(model, encode, audio, size, padded, None, opts, trace), trace

    with_quality, trace = run()
    assert torch.allclose(trace.video.pred_quality, torch.tensor(-1.0))
    head = model.video_module.quality_embed
    del model.video_module.quality_embed  # the same model without the prediction
    without, _ = run()
    model.video_module.quality_embed = head
    assert torch.equal(with_quality.query_indices, without.query_indices)
    torch.testing.assert_close(with_quality.scores, without.scores * torch.sigmoid(torch.tensor(-1.0)))
    assert torch.equal(with_quality.masks, without.masks)
