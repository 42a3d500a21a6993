"""Whole-video inference: chunking invariance, streaming == standard, other T / windows,
padding and output sizes, candidate selection and mask-score arithmetic.

Letters: T frames, cQ video queries, K classes, q queries, Hm x Wm stride-4 grid.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from avis.inference.postprocess import (
    SCORE_EPS,
    cropped_mask_logits,
    mask_confidence,
    rechunk,
    select_candidates,
)
from avis.inference.spill import FeatureSpill
from avis.inference.video import (
    InferenceOptions,
    InferenceTrace,
    features_encoder,
    predict_frames,
    predict_video,
    predict_video_streaming,
)
from avis.models import ChunkEncoding, build_avism, get_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_golden_parity import GOLDEN, _load, golden_features, golden_model  # noqa: E402


def test_select_candidates_query_with_several_classes() -> None:
    logits = torch.full((3, 5), -10.0)
    logits[1, 0] = logits[1, 2] = 5.0  # query 1 is two classes at once
    logits[2, 3] = 4.0
    c = select_candidates(logits, top_k=3)
    pairs = sorted(zip(c.query_index.tolist(), c.labels.tolist()))
    assert pairs == [(1, 0), (1, 2), (2, 3)]
    assert torch.equal(c.flat_index, c.query_index * 4 + c.labels)
    assert torch.all(c.scores[:-1] >= c.scores[1:])
    assert len(select_candidates(logits, top_k=100).scores) == 12  # clamped to cQ * K


def test_rechunk_is_independent_of_input_chunking() -> None:
    x = torch.arange(23.0)
    for cut in ([23], [7, 7, 9], [1] * 23, [18, 5]):
        blocks = list(rechunk(x.split(cut), 5))
        assert [len(b) for b in blocks] == [5, 5, 5, 5, 3]
        assert torch.equal(torch.cat(blocks), x)
    # blocks that lie inside one chunk are views of it (the features are not copied)
    chunks = x.split([7, 16])
    blocks = list(rechunk(chunks, 5))  # 5 | 2+3 (copied) | 5 5 | 3
    assert blocks[0].data_ptr() == chunks[0].data_ptr()
    assert blocks[2].data_ptr() == chunks[1][3:].data_ptr()


def test_mask_confidence_matches_direct_sum() -> None:
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(3, 8, generator=g)
    feats = torch.randn(7, 8, 4, 5, generator=g)
    conf = mask_confidence(embed, rechunk([feats], 2), (16, 20), (13, 17), 0.5)
    p = cropped_mask_logits(embed.double(), feats.double(), (16, 20), (13, 17)).sigmoid()
    hard = (p > 0.5).double()
    torch.testing.assert_close(
        conf.numerator.double(), (p * hard).sum((1, 2, 3)), rtol=1e-5, atol=1e-4
    )
    assert torch.equal(conf.denominator.double(), hard.sum((1, 2, 3)))
    torch.testing.assert_close(conf.score(), conf.numerator / (conf.denominator + SCORE_EPS))


@pytest.mark.parametrize("piece_pixels", [1, 400, 1 << 20])  # 1 row, 1 of 3 rows, all rows
@pytest.mark.parametrize("per_frame", [False, True])
def test_pieces_equal_whole_block(monkeypatch, piece_pixels: int, per_frame: bool) -> None:
    """Mask scores and binary masks computed a few rows of one frame at a time equal the
    whole-block formulas (shared or per-frame embeddings, any piece size)."""
    from avis.inference import postprocess as pp

    monkeypatch.setattr(pp, "PIECE_PIXELS", piece_pixels)
    g = torch.Generator().manual_seed(1)
    embed = torch.randn(3, 4, 8, generator=g) if per_frame else torch.randn(3, 8, generator=g)
    feats = torch.randn(4, 8, 5, 6, generator=g)
    logits = cropped_mask_logits(embed, feats, (20, 24), (17, 22))  # (3, 4, 17, 22)
    want = pp.resize_masks(logits, (30, 41))
    got = pp.binary_masks(embed, feats, (20, 24), (17, 22), (30, 41))
    assert got.dtype == torch.bool and got.shape == want.shape
    assert torch.equal(got, want)
    conf = pp.mask_confidence(embed, rechunk([feats], 3), (20, 24), (17, 22), 0.5)
    probs = logits.sigmoid()
    hard = probs > 0.5
    torch.testing.assert_close(conf.numerator, (probs * hard).sum((1, 2, 3)), rtol=1e-6, atol=1e-5)
    assert torch.equal(conf.denominator, hard.sum((1, 2, 3)).float())


needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason="golden reference not available")


@pytest.fixture(scope="module")
def golden():
    model, cfg = golden_model()
    inputs = _load("inputs.pt")
    feats = golden_features(inputs)
    with torch.no_grad():  # every frame encoded once; frames are independent batch elements
        encoded = model.encode_chunk_features(feats, inputs["audio"], True)
    return model, cfg, inputs, feats, encoded


def _cached_encoder(encoded):
    def encode(start: int, stop: int, with_queries: bool, carry=None) -> ChunkEncoding:  # noqa: ARG001
        return ChunkEncoding(
            mask_features=encoded.mask_features[start:stop],
            frame_queries=encoded.frame_queries[start:stop] if with_queries else None,
            frame=None,
            stride4_features=encoded.stride4_features[start:stop],
        )

    return encode


def _predict(
    golden, frames=None, streaming=False, window=None, cached=True, trace=None, spill=None, **opts
):
    model, cfg, inputs, feats, encoded = golden
    if window is not None:
        model.video_module.window_size = window
    try:
        sl = slice(None) if frames is None else slice(0, frames)
        audio = inputs["audio"][sl]
        if cached:
            encode = _cached_encoder(encoded)
        else:
            encode = features_encoder(model, {k: v[sl] for k, v in feats.items()}, audio)
        options = replace(InferenceOptions.from_config(cfg), **opts)
        size = tuple(inputs["image_size"])
        args = (model, encode, audio, size, size, (144, 180), options, trace)
        return predict_video_streaming(*args, spill=spill) if streaming else predict_video(*args)
    finally:
        model.video_module.window_size = cfg.window_size


def _assert_same(a, b, exact: bool) -> None:
    assert torch.equal(a.labels, b.labels) and torch.equal(a.query_indices, b.query_indices)
    if exact:
        assert torch.equal(a.scores, b.scores) and torch.equal(a.masks, b.masks)
    else:
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
        assert (a.masks != b.masks).float().mean() <= 1e-4


@needs_golden
def test_chunk_sizes_do_not_change_results(golden) -> None:
    """Real chunked frame encoding (5 frames) vs all frames at once; other mask blocks."""
    base = _predict(golden)
    other = _predict(golden, cached=False, run_chunk_size=5, interpolate_chunk_size=2)
    _assert_same(base, other, exact=False)
    for interp in (1, 12):
        _assert_same(base, _predict(golden, interpolate_chunk_size=interp), exact=False)


@needs_golden
@pytest.mark.parametrize("frames,window", [(1, 6), (5, 6), (7, 3), (12, 0), (9, 4), (12, 1)])
def test_streaming_equals_standard_for_other_t_and_windows(
    golden, frames: int, window: int, tmp_path
) -> None:
    a = _predict(golden, frames=frames, window=window, run_chunk_size=4, interpolate_chunk_size=3)
    assert a.masks.shape[1:] == (frames, 144, 180)
    assert torch.isfinite(a.scores).all()
    for spill in (None, FeatureSpill(tmp_path)):  # features recomputed / read back from a file
        b = _predict(
            golden,
            frames=frames,
            window=window,
            run_chunk_size=4,
            interpolate_chunk_size=3,
            streaming=True,
            spill=spill,
        )
        _assert_same(a, b, exact=True)
        if spill is not None:
            assert len(spill) == -(-frames // 4)  # one entry per encoder chunk
            spill.close()


@needs_golden
def test_threshold_between_candidates_keeps_what_filtering_keeps(golden) -> None:
    """Masks are made only for candidates whose class probability passes the threshold; at a
    threshold where some of those still fail (mask score < 1), both paths keep exactly the
    instances (and masks) that filtering the threshold-0 prediction by score keeps."""
    full = _predict(golden, score_threshold=0.0)
    trace = InferenceTrace()
    _predict(golden, score_threshold=0.0, trace=trace)
    class_probs = trace.candidates.scores
    # a threshold that keeps some instances while some candidates above it by class
    # probability fail it by final score
    finals = sorted(full.scores.tolist(), reverse=True)
    thresholds = [(a + b) / 2 for a, b in zip(finals, finals[1:])]
    threshold = next(
        t for t in thresholds if (class_probs > t).sum() > (full.scores > t).sum() > 0
    )
    want = full.scores > threshold
    for streaming in (False, True):
        got = _predict(golden, streaming=streaming, score_threshold=threshold)
        assert torch.equal(got.query_indices, full.query_indices[want])
        assert torch.equal(got.labels, full.labels[want])
        torch.testing.assert_close(got.scores, full.scores[want])
        assert (got.masks != full.masks[want]).float().mean() <= 1e-4


@needs_golden
def test_nothing_kept(golden) -> None:
    for streaming in (False, True):
        p = _predict(golden, streaming=streaming, score_threshold=1.0)
        assert p.masks.shape == (0, 12, 144, 180) and p.scores.numel() == 0


def test_predict_frames_pads_and_resizes() -> None:
    torch.manual_seed(0)
    model = build_avism(get_preset("avism_tiny", window_size=2)).eval()
    frames = (torch.rand(2, 3, 40, 50) * 255).to(torch.uint8)
    audio = torch.randn(2, 128)
    opts = InferenceOptions(
        run_chunk_size=2, interpolate_chunk_size=2, top_k=5, score_threshold=0.0
    )
    p = predict_frames(model, frames, audio, options=opts)
    assert p.masks.shape == (5, 2, 40, 50) and p.masks.dtype == torch.bool
    q = predict_frames(model, frames, audio, out_size=(80, 100), options=opts, streaming=True)
    assert q.masks.shape == (5, 2, 80, 100)
    torch.testing.assert_close(p.scores, q.scores)
    with pytest.raises(ValueError, match="eval"):
        predict_frames(model.train(), frames, audio, options=opts)
