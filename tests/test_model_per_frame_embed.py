"""The optional per-frame mask embeddings of the video queries (AVISMConfig.per_frame_mask_embed).

Letters: B clips, T frames, cQ video queries, fQ frame queries, Cm mask size, Lv decoder layers.
"""

import sys
from pathlib import Path

import pytest
import torch

from avis.inference.postprocess import cropped_mask_logits, resize_masks
from avis.inference.video import (
    InferenceOptions,
    InferenceTrace,
    frames_encoder,
    predict_frames,
    predict_video,
)
from avis.losses import AVISMCriterion
from avis.models.avism import build_avism
from avis.models.config import get_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_losses_criterion import make_clip  # noqa: E402

SMALL = dict(
    backbone_kwargs={"norm": "GN", "stem_channels": 8},
    conv_dim=16, mask_dim=16, norm_groups=4, pixel_decoder_layers=1, pixel_decoder_ffn_dim=32,
    frame_hidden_dim=16, frame_ffn_dim=32, frame_queries=4, frame_dec_layers=1, last_layer_num=2,
    video_hidden_dim=16, video_ffn_dim=32, video_queries=3, video_enc_layers=1, video_dec_layers=2,
    window_size=2,
)  # fmt: skip


def _model(**kw):
    torch.manual_seed(0)
    return build_avism(get_preset("avism_tiny", per_frame_mask_embed=True, **SMALL, **kw))


def test_off_by_default_and_only_extra_weights():
    plain = build_avism(get_preset("avism_tiny", **SMALL))
    refined = _model()
    assert not plain.video_module.per_frame_mask_embed and refined.video_module.per_frame_mask_embed
    extra = set(refined.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("video_module.frame_refine.") for k in extra)
    assert set(plain.state_dict()) <= set(refined.state_dict())


def test_each_frames_embedding_reads_that_frame_only():
    vm = _model().video_module.eval()
    lv, cq, lf, b, t, fq, c = 2, 3, 1, 2, 4, 4, 16
    decoded = torch.randn(lv, cq, lf * b, c)
    fused = torch.randn(t, fq, lf * b, c)
    base = vm._mask_embed(decoded, fused, lf, b)
    assert base.shape == (1, lf, b, cq, t, 16)  # inference: last decoder layer only
    moved = fused.clone()
    moved[2] = torch.randn(fq, lf * b, c)
    changed = vm._mask_embed(decoded, moved, lf, b)
    for frame in range(t):
        same = torch.equal(base[..., frame, :], changed[..., frame, :])
        assert same == (frame != 2), frame
    # training refines every layer; its last layer is what inference computes
    train = vm.train()._mask_embed(decoded, fused, lf, b)
    assert train.shape == (lv, lf, b, cq, t, 16)
    torch.testing.assert_close(train[-1:], base)


def forward_and_loss(model, b: int = 2, t: int = 3):
    """A training forward of a SMALL model on random 32 px clips and the criterion's result
    on two made-up clips (2 and 1 instances)."""
    k = model.video_module.class_embed.out_features - 1
    frames = torch.rand(b, t, 3, 32, 32) * 255
    audio = torch.randn(b, t, model.video_module.av_proj.in_features)
    out = model(frames, audio, [(32, 32)] * b)
    return out, AVISMCriterion(k, num_points=None)(out, small_clips(k, b))


def assert_training_reaches(model, name: str) -> None:
    """A training forward (B = 2 clips of T = 3 frames) and the loss's backward reach every
    parameter of the model's submodule ``name`` (a SMALL model with per-frame embeddings)."""
    out, result = forward_and_loss(model.train(), b=2, t=3)
    assert out.video.pred_mask_embed.shape == (2, 2, 2, 3, 3, 16)  # (Lv, Lf, B, cQ, T, Cm)
    result.total.backward()
    for p in model.get_submodule(name).parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


BLOCK_OPTIONS = dict(run_chunk_size=2, top_k=4, score_threshold=0.0, mask_prob_threshold=0.5)


def predictions_for_block_sizes(model, streaming: bool, t: int = 5):
    """Predictions of a model on t random 32x40 frames with mask blocks of 1, 2 and t frames;
    asserts they agree (how the frames are cut into mask blocks does not matter).
    -> (frames, audio, [the three predictions])."""
    frames = (torch.rand(t, 3, 32, 40) * 255).to(torch.uint8)
    audio = torch.randn(t, model.video_module.av_proj.in_features)
    results = [
        predict_frames(model, frames, audio, (40, 50), InferenceOptions(interpolate_chunk_size=n, **BLOCK_OPTIONS), streaming)
        for n in (1, 2, t)
    ]
    for other in results[1:]:
        assert torch.equal(other.query_indices, results[0].query_indices)
        torch.testing.assert_close(other.scores, results[0].scores)
        assert (other.masks != results[0].masks).float().mean() <= 1e-3
    return frames, audio, results


def small_clips(num_classes: int, b: int = 2) -> list:
    """Two made-up clips (2 and 1 instances, labels < num_classes) on 32 px frames."""
    gen = torch.Generator().manual_seed(3)
    clips = [make_clip(2, gen), make_clip(1, gen)][:b]
    for clip in clips:
        clip.labels.clamp_(max=num_classes - 1)
        clip.masks = torch.nn.functional.interpolate(
            clip.masks.float(), size=(32, 32), mode="nearest"
        ).bool()
    return clips


def test_training_forward_loss_and_gradients():
    model = _model().train()
    b, t = 2, 3
    out, result = forward_and_loss(model, b, t)
    assert out.video.pred_mask_embed.shape == (2, 2, b, 3, t, 16)  # (Lv, Lf, B, cQ, T, Cm)
    assert out.video.pred_masks.shape == (2, 2, b, 3, t, 8, 8)
    loss = result.total
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.video_module.frame_refine.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("streaming", [False, True])
def test_inference_uses_each_frames_embedding(streaming: bool):
    model = _model().eval()
    for p in model.video_module.frame_refine.parameters():  # make frames differ clearly
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.5)
    t = 5
    frames, audio, results = predictions_for_block_sizes(model, streaming, t)
    opts = BLOCK_OPTIONS
    # by hand: frame f's mask uses the embedding of frame f
    trace = InferenceTrace()
    encode, size, padded = frames_encoder(model, frames, audio)
    pred = predict_video(
        model, encode, audio, size, padded, (40, 50), InferenceOptions(**opts), trace
    )
    embed = trace.video.pred_mask_embed[-1, 0, 0]  # (cQ, T, Cm)
    assert embed.shape[:2] == (3, t) and not torch.allclose(embed[:, 0], embed[:, 1])
    with torch.no_grad():
        features = encode(0, t, False).mask_features
        want = resize_masks(
            cropped_mask_logits(embed[pred.query_indices], features, padded, size), (40, 50)
        )
    assert (want != pred.masks).float().mean() <= 1e-3
    assert (want != results[0].masks).float().mean() <= 1e-3
