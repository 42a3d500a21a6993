"""GPU habits of inference, exercised on the CPU: static chunk shapes, the frame prefetcher,
offloaded mask features (same outputs as the default path)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from avis.inference.prefetch import ChunkPrefetcher


@pytest.fixture(scope="module")
def tiny():
    from avis.inference.shipped import ModelInfo
    from avis.models.avism import build_avism
    from avis.models.config import avism_tiny

    torch.manual_seed(0)
    cfg = replace(avism_tiny(), test_short_side=32, test_max_size=64, test_run_chunk_size=3)
    model = build_avism(cfg).eval()
    info = ModelInfo("t", "avis", [f"c{i}" for i in range(cfg.num_classes)], None)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (7, 32, 48, 3), dtype=np.uint8)
    audio = rng.normal(size=(7, cfg.audio_dim)).astype(np.float32)
    return model, cfg, info, frames, audio


def _run(tiny, monkeypatch, **kwargs):
    from avis.inference.predictor import VideoPredictor

    model, cfg, info, frames, audio = tiny
    shapes = []
    encode_chunk = type(model).encode_chunk

    def recording(self, chunk, *args, **kw):
        shapes.append(tuple(chunk.shape))
        return encode_chunk(self, chunk, *args, **kw)

    monkeypatch.setattr(type(model), "encode_chunk", recording)
    streaming = kwargs.pop("streaming", False)
    predictor = VideoPredictor(model, cfg, info, threshold=0.0, spill=False, **kwargs)
    prediction = predictor.predict((frames, audio), streaming=streaming)
    monkeypatch.undo()
    return prediction, shapes


@pytest.mark.parametrize("streaming", [False, True])
def test_static_chunks_pad_the_last_chunk_and_keep_the_outputs(tiny, monkeypatch, streaming):
    want, shapes = _run(tiny, monkeypatch, streaming=streaming)
    got, static_shapes = _run(tiny, monkeypatch, streaming=streaming, static_chunks=True)
    assert want.num_instances > 0
    assert [s[0] for s in shapes[:3]] == [3, 3, 1]  # 7 frames in chunks of 3
    assert {s[0] for s in static_shapes} == {3} and len(static_shapes) == len(shapes)
    # a batch of another size may round differently in the last float bit
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
    assert got.rles == want.rles


def test_prefetch_and_offloaded_features_keep_the_outputs(tiny, monkeypatch):
    want, _ = _run(tiny, monkeypatch)
    got, _ = _run(tiny, monkeypatch, prefetch=True)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.rles == want.rles
    from avis.inference.predictor import VideoPredictor

    model, cfg, info, frames, audio = tiny
    predictor = VideoPredictor(model, cfg, info, threshold=0.0)
    predictor.options.offload_features = True
    got = predictor.predict((frames, audio), streaming=False)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.rles == want.rles


class Frames:
    """A lazy frame source that records which slices were read, and by which thread."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.data = np.arange(n * 2 * 2 * 3, dtype=np.uint8).reshape(n, 2, 2, 3)
        self.reads: list[tuple[int, int, str]] = []
        self.fail_at = fail_at

    def __getitem__(self, index: slice) -> np.ndarray:
        if self.fail_at is not None and index.start == self.fail_at:
            raise OSError("decode error")
        self.reads.append((index.start, index.stop, threading.current_thread().name))
        return self.data[index]


def test_prefetcher_reads_ahead_in_a_thread_in_order_and_restarts():
    frames = Frames(7)
    spans = [(0, 3), (3, 6), (6, 7)]
    with ChunkPrefetcher(frames, spans, depth=1) as reader:
        for start, stop in spans:
            assert torch.equal(reader.get(start, stop), torch.from_numpy(frames.data[start:stop]))
        # a second pass (the memory-bounded path's) restarts the reader at its first chunk
        for start, stop in spans:
            assert torch.equal(reader.get(start, stop), torch.from_numpy(frames.data[start:stop]))
        # an unplanned span is read directly
        assert torch.equal(reader.get(1, 2), torch.from_numpy(frames.data[1:2]))
    assert all(name == "avis-prefetch" for *_, name in frames.reads[:6])
    assert [r[:2] for r in frames.reads[:6]] == spans * 2
    assert frames.reads[-1] == (1, 2, threading.current_thread().name)


def test_prefetcher_hands_errors_to_the_caller_and_stops():
    frames = Frames(7, fail_at=3)
    reader = ChunkPrefetcher(frames, [(0, 3), (3, 6), (6, 7)], depth=2)
    reader.get(0, 3)
    with pytest.raises(OSError, match="decode error"):
        reader.get(3, 6)
    reader.close()
    with pytest.raises(ValueError, match="depth"):
        ChunkPrefetcher(frames, [], depth=0)


def test_memory_bounded_path_encodes_smaller_chunks_with_the_same_outputs(tiny, monkeypatch):
    want, shapes = _run(tiny, monkeypatch, streaming=True)
    got, small = _run(tiny, monkeypatch, streaming=True, streaming_chunk_size=2)
    assert [s[0] for s in shapes] == [3, 3, 1] * 2  # two passes (recomputed features)
    assert [s[0] for s in small] == [2, 2, 2, 1] * 2
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
    assert got.rles == want.rles
    standard, full = _run(tiny, monkeypatch, streaming_chunk_size=2)  # standard path: unchanged
    assert [s[0] for s in full] == [3, 3, 1]
