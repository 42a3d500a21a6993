"""``carry_slots``: the frame decoder reads a clip's frames in order, and a slot that held an
object in the previous frame starts from its query there and attends, in its first layer, where
its mask lay there (avis.models.frame_decoder.SlotCarry); inference hands the state from chunk
to chunk."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avis.inference.online import OnlineOptions, OnlinePredictor
from avis.inference.predictor import VideoPredictor
from avis.inference.shipped import ModelInfo
from avis.inference.video import (
    InferenceOptions,
    frames_encoder,
    predict_video,
    predict_video_streaming,
)
from avis.models.avism import build_avism
from avis.models.config import avism_tiny, get_preset
from avis.models.frame_decoder import FrameDecoderOutput, SlotCarry

SMALL = dict(num_classes=3, test_short_side=64)  # fmt: skip


def _pair(**overrides):
    """The tiny model without and with carry_slots, same weights (the option has none)."""
    torch.manual_seed(0)
    plain = build_avism(get_preset("avism_tiny", **SMALL, **overrides)).eval()
    carried = build_avism(get_preset("avism_tiny", carry_slots=True, **SMALL, **overrides)).eval()
    assert set(carried.state_dict()) == set(plain.state_dict())
    carried.load_state_dict(plain.state_dict(), strict=True)
    return plain, carried


def _inputs(batch: int = 2, frames: int = 3):
    torch.manual_seed(1)
    return torch.rand(batch, frames, 3, 64, 64) * 255, torch.randn(batch, frames, 128)


def test_each_clip_starts_as_the_official_decoder_and_later_frames_start_from_the_previous():
    plain, carried = _pair()
    frames, audio = _inputs()
    with torch.no_grad():
        want = plain(frames, audio, [(64, 48), (56, 64)])
        got = carried(frames, audio, [(64, 48), (56, 64)])
    first = torch.tensor([0, 3])  # frame 0 of each clip (N = B*T, clip-major)
    later = torch.tensor([1, 2, 4, 5])
    torch.testing.assert_close(got.frame.pred_masks[:, first], want.frame.pred_masks[:, first])
    torch.testing.assert_close(got.frame.pred_logits[:, first], want.frame.pred_logits[:, first])
    assert not torch.allclose(got.frame.pred_masks[:, later], want.frame.pred_masks[:, later])
    assert got.frame.pred_masks.shape == want.frame.pred_masks.shape
    assert got.frame.frame_queries.shape == want.frame.frame_queries.shape
    assert got.video.pred_masks.shape == want.video.pred_masks.shape
    # frame 1 of clip 0 is the decoder on that frame, started from frame 0's carry
    previous = FrameDecoderOutput(  # frame 0 of clip 0, as the decoder handed it on
        pred_logits=got.frame.pred_logits[:, :1],
        pred_masks=got.frame.pred_masks[:, :1],
        frame_queries=got.frame.frame_queries[:, :1],
        audio_fusion=torch.empty(0),
    )
    held = SlotCarry.of(previous)
    assert held.held.any(), "a random model's slots should hold something (P(no object) < 0.5)"
    with torch.no_grad():
        again = _decode_one(carried, frames[:1, 1], audio[:1, 1], (64, 48), held)
    torch.testing.assert_close(again.pred_masks[-1], got.frame.pred_masks[-1, 1:2])
    torch.testing.assert_close(again.pred_logits[-1], got.frame.pred_logits[-1, 1:2])


def _decode_one(model, frame, audio, size, carry):
    """The frame decoder on one frame (1, 3, Hp, Wp) with a given carry (training-forward settings)."""
    features = model.backbone_features(frame.unsqueeze(1), [size])
    pix = model.decode_pixels(features, None, None)
    multi_scale, mask_features, _, _ = model._with_spatial(pix, None, None)
    return model.frame_decoder(multi_scale, mask_features, audio, 1, True, carry=carry)


def test_a_held_slot_starts_from_its_query_and_attends_where_its_mask_lay_the_others_as_before():
    decoder = build_avism(get_preset("avism_tiny", **SMALL)).frame_decoder.eval()
    torch.manual_seed(2)
    levels = [torch.randn(2, 64, s, s) for s in (2, 4, 8)]
    mask_features = torch.randn(2, 64, 16, 16)
    audio = torch.randn(2, 128)
    fq = decoder.query_feat.weight.shape[0]
    masks = torch.full((2, fq, 16, 16), -20.0)
    masks[:, 0, :8, :8] = 20.0  # slot 0 lay top-left
    masks[:, 1, 8:, 4:] = 20.0  # slot 1 lay bottom-right, but held nothing
    held = torch.zeros(2, fq, dtype=torch.bool)
    held[:, 0] = True
    queries = torch.randn(2, fq, 64)
    seen: list[torch.Tensor] = []

    def grab(module, args, kwargs):  # noqa: ARG001
        seen.append(kwargs["memory_mask"])

    hook = decoder.transformer_cross_attention_layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        plain = decoder(levels, mask_features, audio, 1, False)
        carried = decoder(levels, mask_features, audio, 1, False, carry=SlotCarry(queries, masks, held))
        none_held = decoder(levels, mask_features, audio, 1, False, carry=SlotCarry(queries, masks, held & False))
        other_query = decoder(levels, mask_features, audio, 1, False, carry=SlotCarry(-queries, masks, held))
    hook.remove()
    before, after, nothing, _ = (m[:, 0] for m in seen)  # (N, fQ, h*w) blocked, level 0 (2 x 2)
    want0 = F.interpolate(masks[:, :1], size=(2, 2), mode="bilinear", align_corners=False).sigmoid() < 0.5
    assert torch.equal(after[:, 0], want0.flatten(1))  # slot 0 reads only its old top-left cell
    assert torch.equal(after[:, 0], torch.tensor([[False, True, True, True]] * 2))
    assert torch.equal(after[:, 1:], before[:, 1:])  # the others as the official decoder
    assert torch.equal(nothing, before)
    torch.testing.assert_close(none_held.pred_masks, plain.pred_masks)
    assert not torch.allclose(carried.pred_masks, plain.pred_masks)
    assert not torch.allclose(other_query.pred_logits[:, :, 0], carried.pred_logits[:, :, 0])  # its query


def test_inference_hands_the_carry_from_chunk_to_chunk():
    _, model = _pair(per_frame_mask_embed=True)
    frames, audio = _inputs(batch=1, frames=7)
    with torch.no_grad():
        trained = model(frames, audio, [(64, 64)])  # the whole clip at once (eval mode)
        encode, size, padded = frames_encoder(model, frames[0], audio[0])
        queries, carry = [], None
        for start, stop in ((0, 3), (3, 5), (5, 7)):
            enc = encode(start, stop, True, carry)
            queries.append(enc.frame_queries)
            carry = enc.carry
        fresh = encode(3, 5, True).frame_queries  # a chunk read without its predecessor
    torch.testing.assert_close(torch.cat(queries), trained.frame.frame_queries[-1], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fresh, queries[1], atol=1e-3)
    assert encode(0, 3, False).carry is None  # the mask pass has no frame decoder
    # the chunk size does not change a prediction; the memory-bounded path gives the same
    runs = []
    for chunk in (7, 2):
        opts = InferenceOptions(run_chunk_size=chunk, score_threshold=0.0)
        runs.append(predict_video(model, encode, audio[0], size, padded, options=opts))
    streamed = predict_video_streaming(model, encode, audio[0], size, padded, options=opts)
    for other in (runs[1], streamed):
        torch.testing.assert_close(other.scores, runs[0].scores, atol=1e-4, rtol=1e-4)
        assert torch.equal(other.labels, runs[0].labels)
        assert (other.masks != runs[0].masks).float().mean() < 1e-3


def test_online_mode_carries_the_slots_frame_by_frame():
    torch.manual_seed(0)
    cfg = replace(avism_tiny(), test_short_side=32, test_max_size=64, score_threshold=0.0, carry_slots=True)
    model = build_avism(cfg).eval()
    info = ModelInfo("random", "avis", [f"c{i}" for i in range(cfg.num_classes)], "weight_free")
    predictor = VideoPredictor(model, cfg, info)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 24, 32, 3), dtype=np.uint8)
    audio = rng.normal(size=(6, 128)).astype(np.float32)
    online = OnlinePredictor(predictor, OnlineOptions(latency=5, window=6))
    for frame, second in zip(frames, audio):
        online.push(frame, second)
    assert online.carry is not None
    streamed = torch.stack([b[0] for b in online.buffer])  # (6, fQ, C) frame by frame
    encode, _, _ = predictor.encoder(frames, torch.from_numpy(audio))
    with torch.no_grad():
        whole = encode(0, 6, True).frame_queries
    torch.testing.assert_close(streamed, whole, atol=1e-4, rtol=1e-4)
    online.reset()
    assert online.carry is None


def test_carry_slots_refuses_mask_pilots():
    with pytest.raises(ValueError, match="carry_slots"):
        build_avism(get_preset("avism_tiny", carry_slots=True, mask_pilots=True, **SMALL))
