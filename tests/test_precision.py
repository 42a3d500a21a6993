"""`--precision` (avis.precision): contexts, defaults, and every mode through VideoPredictor on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avis.precision import (
    PRECISIONS,
    default_precision,
    float32_island,
    precision_context,
    resolve_precision,
    supported_precisions,
)
from synth_inputs import model_audio


def test_modes_defaults_and_errors():
    assert default_precision("cpu") == "fp32"
    assert default_precision(torch.device("cuda", 0)) == "bf16"
    assert resolve_precision(None, "cpu") == resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ValueError, match="fp32, tf32, bf16, fp16"):
        resolve_precision("half", "cpu")


def test_supported_precisions_per_device(monkeypatch):
    with torch.autocast("cpu", dtype=torch.float16):  # this PyTorch's CPU autocast and float16
        cpu_fp16 = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    assert supported_precisions("cpu") == ("fp32", "bf16", *(("fp16",) if cpu_fp16 else ()))
    # CUDA without a GPU here: the answers of the CUDA queries decide
    for capability, bf16, expected in [
        ((7, 5), False, ("fp32", "fp16")),  # Turing: no TF32, no native bf16
        ((9, 0), True, ("fp32", "tf32", "bf16", "fp16")),  # Hopper
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, b=bf16: b)
        assert supported_precisions("cuda:0") == expected


@pytest.mark.parametrize("precision", PRECISIONS)
def test_context_sets_tf32_and_autocast_and_restores(precision):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with precision_context(precision, "cpu"):
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        y = torch.nn.functional.linear(x, w)
        with float32_island("cpu"):
            z = torch.nn.functional.linear(x, w)
    assert tf32 == ((precision != "fp32"),) * 2  # fp32 is strict: TF32 off
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    assert y.dtype == expected and z.dtype == torch.float32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert not torch.is_autocast_enabled("cpu")


@pytest.fixture(scope="module")
def shipped():
    from avis.data.synth.config import SynthConfig
    from avis.data.synth.render import render_frame, scene_parts
    from avis.data.synth.scene import sample_scene
    from avis.data.synth.writer import soundtrack
    from avis.inference.predictor import VideoPredictor

    # the network's own instances: component splitting cuts a mask into its connected pieces,
    # and a piece of a few pixels comes and goes with any change of the products' rounding, so
    # the heuristic would compare how many pieces a borderline mask has, not the precisions
    predictor = VideoPredictor.from_checkpoint(split_components=False)
    # a 7-frame scene of the synthetic benchmark (what the shipped model knows), so that it
    # keeps instances whose masks the precisions can be compared on
    spatial = predictor.config.spatial_audio  # a spatial-audio shipped model hears stereo (benchmark v2)
    cfg = SynthConfig(stereo=spatial)
    scene = sample_scene(np.random.default_rng(0), 7, cfg)
    frames = np.stack([render_frame(scene, scene_parts(scene, float(t)), 4) for t in range(7)])
    wave = soundtrack(scene, cfg, np.random.default_rng(0))
    audio = model_audio(wave, cfg.sample_rate, 7, spatial)
    return predictor, frames, audio, predictor.predict((frames, audio))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_through_the_predictor(shipped, precision):
    from avis.inference.predictor import VideoPredictor

    base, frames, audio, want = shipped
    assert base.precision == "fp32" and want.num_instances > 0
    predictor = VideoPredictor(base.model, base.config, base.info, precision=precision, split_components=False)
    dtypes: dict[str, set] = {}

    def hook(name):
        def record(module, inputs, output):
            dtypes.setdefault(name, set()).add(output.dtype)

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in base.model.named_modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    ]
    try:
        got = predictor.predict((frames, audio))
    finally:
        for h in handles:
            h.remove()
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if low is None:  # fp32 and tf32 (the same on CPU): identical outputs, float32 products
        assert all(d == {torch.float32} for d in dtypes.values())
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.rles == want.rles
        return
    # every linear layer and convolution ran in the low dtype, except the pixel decoder
    # under fp16 (its float32 island)
    island = {n for n in dtypes if n.startswith("pixel_decoder.")} if precision == "fp16" else set()
    assert island or precision == "bf16"
    for name, seen in dtypes.items():
        assert seen == ({torch.float32} if name in island else {low}), (name, seen)
    assert got.num_instances == want.num_instances
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.scores, want.scores, atol=0.05)
    for a, b in zip(got.masks(), want.masks()):
        assert _iou(a, b) > 0.95


def test_mask_postprocessing_is_float32_under_autocast():
    from avis.inference.postprocess import mask_logit_pieces, select_candidates

    torch.manual_seed(0)
    embed, features = torch.randn(3, 8).bfloat16(), torch.randn(2, 8, 4, 5).bfloat16()
    with precision_context("bf16", "cpu"):
        pieces = list(mask_logit_pieces(embed, features, (16, 20), (14, 18)))
        cands = select_candidates(torch.randn(5, 4).bfloat16(), 3)
    assert all(logits.dtype == torch.float32 for _, _, logits in pieces)
    assert cands.scores.dtype == torch.float32


@pytest.mark.parametrize("command", ["predict", "demo"])
def test_cli_passes_the_precision_on(monkeypatch, tmp_path, command, capsys):
    from avis.cli.main import main
    from avis.inference.predictor import VideoPredictor

    seen = {}

    class Stop(Exception):
        pass

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(VideoPredictor, "from_checkpoint", staticmethod(fake))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"never opened: the predictor is built first")
    extra = [str(video), "--out", str(tmp_path / "out")] if command == "predict" else []
    with pytest.raises(Stop):
        main([command, *extra, "--precision", "bf16", "-v"])  # -v: exceptions propagate
    assert seen["precision"] == "bf16"
    with pytest.raises(SystemExit):
        main([command, *extra, "--precision", "half"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_precision_choices_are_auto_and_every_mode():
    from avis.cli.args import PRECISION_CHOICES
    from avis.precision import PRECISIONS

    assert ("auto", *PRECISIONS) == PRECISION_CHOICES
