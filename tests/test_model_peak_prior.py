"""The optional peak-relative mask prior of the video queries (AVISMConfig.peak_prior).

Letters: B clips, T frames, cQ video queries, Cm mask size, Hm x Wm mask grid.
"""

import math
import sys
from pathlib import Path

import pytest
import torch

from avis.inference.online import _low_res_masks
from avis.inference.postprocess import (
    cropped_mask_logits,
    low_res_mask_logits,
    mask_logit_pieces,
    resize_masks,
)
from avis.inference.video import (
    InferenceOptions,
    InferenceTrace,
    frames_encoder,
    predict_frames,
    predict_video,
)
from avis.models.avism import build_avism
from avis.models.config import get_preset
from avis.models.peak_prior import PEAK_PRIOR_SIGMAS, PeakPrior
from avis.models.video_module import video_masks

sys.path.insert(0, str(Path(__file__).parent))
from test_model_per_frame_embed import SMALL, forward_and_loss  # noqa: E402


def _model(per_frame: bool = True, **kw):
    torch.manual_seed(0)
    cfg = get_preset("avism_tiny", per_frame_mask_embed=per_frame, peak_prior=True, **SMALL, **kw)
    return build_avism(cfg)


def _set_prior(prior: PeakPrior, seed: int = 1, scale: float = 1.0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (prior.weight.weight, prior.weight.bias):
            p.copy_(scale * torch.randn(p.shape, generator=generator))


def test_off_by_default_only_extra_weights_and_zero_start():
    plain = build_avism(get_preset("avism_tiny", per_frame_mask_embed=True, **SMALL))
    model = _model()
    assert plain.video_module.peak_prior is None and model.video_module.peak_prior is not None
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"video_module.peak_prior.weight.weight", "video_module.peak_prior.weight.bias"}
    # zero-initialised: a fresh model computes what the model without the option computes
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in extra})
    model.eval(), plain.eval()
    frames = torch.rand(1, 2, 3, 32, 32) * 255
    audio = torch.randn(1, 2, model.video_module.av_proj.in_features)
    with torch.no_grad():
        got = model(frames, audio, [(32, 32)]).video.pred_masks
        want = plain(frames, audio, [(32, 32)]).video.pred_masks
    assert torch.equal(got, want)


def test_the_term_is_the_radial_profile_around_the_peak():
    prior = PeakPrior(mask_dim=3)
    _set_prior(prior)
    embed = torch.randn(2, 3)  # (q, Cm)
    logits = torch.zeros(2, 6, 8)
    logits[0, 1, 2] = 5.0  # query 0 peaks at row 1, column 2
    logits[1, 4, 7] = 5.0  # query 1 at row 4, column 7 ...
    logits[1, 5, 0] = 9.0  # ... unless row 5 counts (the padding below is excluded)
    with torch.no_grad():
        out = prior(embed, logits, valid=(5, 8))
    weights = prior.weight(embed).detach()  # (q, S + 1): radii, then the distance
    for q, (py, px) in enumerate([(1, 2), (4, 7)]):
        for y, x in [(0, 0), (1, 2), (5, 7), (3, 4)]:
            d2 = ((y - py) ** 2 + (x - px) ** 2) / 8.0**2  # units of the longer side
            term = float(weights[q, -1]) * math.sqrt(d2) + sum(
                float(weights[q, s]) * math.exp(-d2 / (2 * sigma**2))
                for s, sigma in enumerate(PEAK_PRIOR_SIGMAS)
            )
            assert float(out[q, y, x] - logits[q, y, x]) == pytest.approx(term, abs=1e-5)
    # without `valid` the whole grid is searched: query 1's peak moves to row 5
    with torch.no_grad():
        whole = prior(embed, logits)
    assert not torch.allclose(whole[1], out[1]) and torch.allclose(whole[0], out[0])


def test_a_slight_preference_becomes_one_whole_instance():
    """Two look-alike blobs, base logits on both (one slightly higher): with a negative
    distance weight only the preferred blob stays."""
    prior = PeakPrior(mask_dim=1)
    with torch.no_grad():
        prior.weight.weight.zero_()
        prior.weight.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -8.0]))  # distance only
    base = torch.full((1, 40, 40), -3.0)
    base[0, 8:16, 5:13] = 2.0  # twin A
    base[0, 8:16, 27:35] = 2.0  # twin B
    base[0, 12, 9] = 2.2  # the query likes A a little more
    masks = prior(torch.zeros(1, 1), base) > 0
    assert (base[0] > 0).sum() == 2 * 64 and (base[0, :, :20] > 0).any()
    assert masks[0, 8:16, 5:13].all()  # all of A
    assert not masks[0, :, 20:].any()  # none of B
    assert not masks[0, :8].any() and not masks[0, 16:].any()  # nothing new


def test_training_masks_carry_the_prior_and_its_gradients():
    for per_frame in (True, False):
        model = _model(per_frame=per_frame).train()
        _set_prior(model.video_module.peak_prior)
        torch.manual_seed(5)
        out, result = forward_and_loss(model, b=2, t=3)
        prior = model.video_module.peak_prior
        with torch.no_grad():  # the same forward without the term
            model.video_module.peak_prior = None
            torch.manual_seed(5)
            plain, _ = forward_and_loss(model, b=2, t=3)
            model.video_module.peak_prior = prior
        torch.testing.assert_close(plain.video.pred_mask_embed, out.video.pred_mask_embed)
        assert not torch.allclose(plain.video.pred_masks, out.video.pred_masks)
        result.total.backward()
        grads = [p.grad for p in prior.parameters()]
        assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_video_masks_match_the_inference_logits():
    """Training's `video_masks` and inference's `low_res_mask_logits` give the same logits,
    per-frame and per-track embeddings, with the same prior."""
    prior = PeakPrior(mask_dim=4)
    _set_prior(prior)
    features = torch.randn(1, 3, 4, 6, 7)  # (B, T, Cm, Hm, Wm)
    for embed in (torch.randn(1, 5, 3, 4), torch.randn(1, 5, 4)):  # (B, cQ, T, Cm) / (B, cQ, Cm)
        per_frame = embed.dim() == 4
        train = video_masks(embed, features, per_frame, prior)[0]  # (cQ, T, Hm, Wm)
        test = low_res_mask_logits(embed[0], features[0], (24, 28), (24, 28), prior)
        torch.testing.assert_close(train, test)
        assert not torch.allclose(train, video_masks(embed, features, per_frame)[0])


def test_every_inference_path_applies_the_same_prior():
    prior = PeakPrior(mask_dim=4)
    _set_prior(prior)
    embed = torch.randn(5, 3, 4)  # (q, t, Cm)
    features = torch.randn(3, 4, 6, 8)  # (t, Cm, Hm, Wm)
    padded, size = (24, 32), (21, 27)
    whole = cropped_mask_logits(embed, features, padded, size, prior)  # (q, t, h, w)
    assert whole.shape == (5, 3, 21, 27)
    for rows, frame, piece in mask_logit_pieces(embed, features, padded, size, prior):
        torch.testing.assert_close(piece, whole[rows, frame])
    online = _low_res_masks(embed, features, padded, size, prior)  # (q, t, hm, wm) bool
    low = low_res_mask_logits(embed, features, padded, size, prior)
    assert online.shape == (5, 3, 6, 7) and torch.equal(online, low[..., :6, :7] > 0)
    assert not torch.equal(whole, cropped_mask_logits(embed, features, padded, size))


@pytest.mark.parametrize("streaming", [False, True])
def test_predicted_masks_use_the_prior(streaming: bool):
    model = _model().eval()
    for p in model.video_module.frame_refine.parameters():  # masks of a fresh model: non-empty
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.5)
    _set_prior(model.video_module.peak_prior, scale=0.1)  # masks change but are not emptied
    t = 4
    frames = (torch.rand(t, 3, 32, 40) * 255).to(torch.uint8)
    audio = torch.randn(t, model.video_module.av_proj.in_features)
    opts = InferenceOptions(run_chunk_size=2, top_k=4, score_threshold=0.0, mask_prob_threshold=0.5)
    result = predict_frames(model, frames, audio, (40, 50), opts, streaming)
    trace = InferenceTrace()
    encode, size, padded = frames_encoder(model, frames, audio)
    pred = predict_video(model, encode, audio, size, padded, (40, 50), opts, trace)
    embed = trace.video.pred_mask_embed[-1, 0, 0][pred.query_indices]
    with torch.no_grad():
        features = encode(0, t, False).mask_features
        prior = model.video_module.peak_prior
        want = resize_masks(cropped_mask_logits(embed, features, padded, size, prior), (40, 50))
        without = resize_masks(cropped_mask_logits(embed, features, padded, size), (40, 50))
    assert len(pred.scores) and want.any()
    assert (want != pred.masks).float().mean() <= 1e-3
    assert (want != result.masks).float().mean() <= 1e-3
    assert (without != want).any()  # the prior changed the masks
