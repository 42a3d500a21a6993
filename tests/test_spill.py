"""The streaming path's temporary mask-feature file (avis.inference.spill) and its use."""

import numpy as np
import pytest
import torch

from avis.inference import spill as spill_module
from avis.inference.spill import FeatureSpill, spill_fits


def test_round_trip_is_exact_and_repeatable(tmp_path):
    torch.manual_seed(0)
    chunks = [torch.randn(3, 4, 5, 6), torch.randn(1, 4, 5, 6), torch.randn(7)]
    with FeatureSpill(tmp_path) as spill:
        for chunk in chunks:
            spill.append(chunk)
        assert len(spill) == 3 and spill.nbytes == sum(c.numel() * 4 for c in chunks)
        for _ in range(2):  # iterating twice reads the same values
            got = list(spill)
            assert [g.shape for g in got] == [c.shape for c in chunks]
            assert all(torch.equal(g, c) for g, c in zip(got, chunks))
        path = spill.path
        assert path.parent == tmp_path and path.is_file()
    assert not path.exists() and not list(tmp_path.iterdir())


def test_file_removed_after_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), FeatureSpill(tmp_path) as spill:
        spill.append(torch.ones(2, 2))
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())


def test_reduced_precision_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    chunks = [torch.randn(2, 3, 4).to(torch.bfloat16), torch.randn(5).half(), torch.randn(3)]
    with FeatureSpill(tmp_path) as spill:
        for chunk in chunks:
            spill.append(chunk)
        assert spill.nbytes == 2 * 24 + 2 * 5 + 4 * 3
        got = list(spill)
    assert [g.dtype for g in got] == [c.dtype for c in chunks]
    assert all(torch.equal(g, c) for g, c in zip(got, chunks))


def test_rejects_other_dtypes_and_notices_truncation(tmp_path):
    with FeatureSpill(tmp_path) as spill:
        with pytest.raises(TypeError, match="float32"):
            spill.append(torch.ones(2, dtype=torch.float64))
        spill.append(torch.ones(10))
        spill._file.flush()
        spill._file.truncate(8)  # a disk that lost the tail
        with pytest.raises(OSError, match="truncated"):
            list(spill)


def test_spill_fits_asks_for_a_margin(tmp_path, monkeypatch):
    class Usage:
        free = 3 << 30

    monkeypatch.setattr(spill_module.shutil, "disk_usage", lambda path: Usage)
    assert spill_fits(1 << 30, tmp_path)
    assert not spill_fits(2 << 30, tmp_path)  # 2.2 GiB + 1 GiB margin > 3 GiB


def test_predictor_spills_or_recomputes(tmp_path, monkeypatch):
    from dataclasses import replace

    from avis.inference.predictor import VideoPredictor
    from avis.inference.shipped import ModelInfo
    from avis.models.avism import build_avism
    from avis.models.config import avism_tiny

    torch.manual_seed(0)
    cfg = replace(avism_tiny(), test_short_side=32, test_max_size=64, test_run_chunk_size=2)
    model = build_avism(cfg)
    info = ModelInfo("t", "avis", [f"c{i}" for i in range(cfg.num_classes)], None)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    audio = rng.normal(size=(5, cfg.audio_dim)).astype(np.float32)
    calls = []
    encode_chunk = model.encode_chunk

    def recording(*args, **kwargs):
        calls.append(args[3] if len(args) > 3 else kwargs.get("with_queries", True))
        return encode_chunk(*args, **kwargs)

    monkeypatch.setattr(model, "encode_chunk", recording)
    runs = {}
    for name, kwargs in (
        ("in memory", {"streaming": False}),
        ("spilled", {"streaming": True, "spill_dir": tmp_path}),
        ("recomputed", {"streaming": True, "spill": False}),
    ):
        calls.clear()
        predictor = VideoPredictor(model, cfg, info, threshold=0.0, **kwargs)
        runs[name] = (predictor.predict((frames, audio)), list(calls))
    assert runs["in memory"][1] == runs["spilled"][1] == [True] * 3  # chunks of 2, 2, 1
    assert runs["recomputed"][1] == [True] * 3 + [False] * 3  # a second encoder pass
    base = runs["in memory"][0]
    assert base.num_instances > 0
    for name in ("spilled", "recomputed"):
        got = runs[name][0]
        np.testing.assert_array_equal(got.scores, base.scores)
        assert got.rles == base.rles
    assert not list(tmp_path.iterdir())  # the spill file is gone
    monkeypatch.setattr("avis.inference.predictor.spill_fits", lambda nbytes, directory: False)
    calls.clear()
    VideoPredictor(model, cfg, info, threshold=0.0, streaming=True).predict((frames, audio))
    assert calls == [True] * 3 + [False] * 3  # no room: recomputed
