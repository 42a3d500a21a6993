"""VGGish network: strict loading of the torchvggish layout, output definition, extractors."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avis.audio.features import WeightFreeExtractor, build_extractor, log_mel_examples
from avis.audio.vggish import (
    TF_VARIABLES,
    Postprocessor,
    VGGish,
    VGGishExtractor,
    check_vggish_state_dict,
    load_pca_params,
    load_vggish,
    tf_to_torch_state_dict,
    vggish_from_state_dict,
)
from avis.errors import CheckpointError
from shared_data import AUDIO_REFERENCE

KEYS_FILE = AUDIO_REFERENCE / "torchvggish_keys.json"


def _layout() -> dict:
    if not KEYS_FILE.is_file():
        pytest.skip("no torchvggish_keys.json")
    return json.loads(KEYS_FILE.read_text())


def _random_state_dict(entries: list[dict], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for entry in entries:
        shape = tuple(entry["shape"])
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        std = math.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.01
        state[entry["key"]] = torch.randn(shape, generator=gen) * std
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    state = _random_state_dict(_layout()["vggish_pth_state_dict"]["keys"])
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def model(weights_file: tuple[Path, dict]) -> VGGish:
    return load_vggish(weights_file[0])


def test_layout_matches_torchvggish_keys() -> None:
    layout = _layout()["vggish_pth_state_dict"]
    with torch.device("meta"):
        net = VGGish()
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == {e["key"]: e["shape"] for e in layout["keys"]}
    assert sum(p.numel() for p in net.parameters()) == layout["num_params"]


def test_flatten_is_nhwc() -> None:
    maps = torch.arange(2 * 512 * 6 * 4, dtype=torch.float32).reshape(2, 512, 6, 4)
    flat = VGGish.flatten_nhwc(maps)
    n, c, h, w = 1, 7, 5, 2
    assert flat[n, (h * 4 + w) * 512 + c] == maps[n, c, h, w]


def test_load_and_forward(weights_file: tuple[Path, dict], model: VGGish) -> None:
    _, state = weights_file
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)
    assert not model.training
    examples = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        out = model(examples)
        hidden = model.embeddings[:5](VGGish.flatten_nhwc(model.features(examples)))
    assert out.shape == (3, 128)
    assert torch.isfinite(out).all() and (out >= 0).all()
    torch.testing.assert_close(out, hidden.clamp(min=0))  # the AVIS output is fc2 after ReLU


def test_strict_checking_errors(weights_file: tuple[Path, dict]) -> None:
    _, state = weights_file
    bad = dict(state)
    del bad["embeddings.4.bias"]
    with pytest.raises(CheckpointError, match=r"w\.pth.*embeddings\.4\.bias"):
        check_vggish_state_dict(bad, "w.pth")
    with pytest.raises(CheckpointError, match="extra"):
        check_vggish_state_dict(dict(state, extra=torch.zeros(1)), "w.pth")
    bad = dict(state)
    bad["features.0.weight"] = torch.zeros(64, 1, 3, 4)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight.*\(64, 1, 3, 3\)"):
        vggish_from_state_dict(bad)
    with pytest.raises(CheckpointError, match="state dict"):
        check_vggish_state_dict([1, 2], "w.pth")
    bad = dict(state)
    bad["embeddings.4.bias"] = state["embeddings.4.bias"].clone()
    bad["embeddings.4.bias"][3] = float("nan")  # issue 18: NaN weights gave NaN features silently
    with pytest.raises(CheckpointError, match=r"w\.pth: entry 'embeddings\.4\.bias' holds 1 NaN"):
        check_vggish_state_dict(bad, "w.pth")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_vggish(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_vggish(tmp_path / "absent.pth")


def test_pproc_keys_are_accepted(weights_file: tuple[Path, dict]) -> None:
    _, state = weights_file
    layout = _layout()["vggish_module_with_postprocess_state_dict"]["keys"]
    pproc = _random_state_dict([e for e in layout if e["key"].startswith("pproc.")], seed=1)
    loaded = vggish_from_state_dict(dict(state, **pproc))
    assert torch.equal(loaded.embeddings[4].weight, state["embeddings.4.weight"])


def test_postprocessor_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(128, 128))
    means = rng.normal(size=128)
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, tmp_path / "pca.pth")
    np.savez(tmp_path / "pca.npz", pca_eigen_vectors=vectors, pca_means=means)
    emb = rng.uniform(0, 2, size=(4, 128))
    expected_pca = (vectors @ (emb.T - means[:, None])).T
    expected_q = np.round((np.clip(expected_pca, -2, 2) + 2) * (255 / 4))
    for name in ("pca.pth", "pca.npz"):
        post = load_pca_params(tmp_path / name)
        emb_t = torch.tensor(emb, dtype=torch.float32)
        np.testing.assert_allclose(post.pca(emb_t).numpy(), expected_pca, rtol=1e-4, atol=1e-3)
        got_q = post(emb_t).numpy()
        assert np.abs(got_q - expected_q).max() <= 1.0  # float32 may flip a .5 rounding
        assert got_q.min() >= 0 and got_q.max() <= 255
    torch.save({"pca_means": means}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="pca_eigen_vectors"):
        load_pca_params(tmp_path / "bad.pth")


def test_extractor_runs_front_end_and_network(weights_file: tuple[Path, dict]) -> None:
    """Also the file-loading path of build_extractor."""
    path, _ = weights_file
    extractor = build_extractor("vggish", weights=path)
    assert isinstance(extractor, VGGishExtractor) and extractor.name == "vggish"
    rng = np.random.default_rng(0)
    audio = (rng.normal(0, 0.1, size=(int(1.5 * 22050), 2)) * 32767).astype(np.int16)
    feats = extractor(audio, 22050, 3)
    assert feats.shape == (3, 128) and feats.dtype == np.float32
    examples = torch.from_numpy(log_mel_examples(audio, 22050, 3))[:, None]
    with torch.no_grad():
        expected = extractor.model(examples).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    # seconds 1 and 2 are zero-filled patches: same input, same (non-trivial) embedding
    np.testing.assert_array_equal(feats[1], feats[2])


def test_quantized_output(model: VGGish) -> None:
    post = Postprocessor(torch.eye(128), torch.zeros(128))
    extractor = VGGishExtractor(model, post, output="quantized", batch_size=2)
    feats = extractor(np.zeros(16000 * 3), 16000, 3)
    assert feats.shape == (3, 128) and np.all(feats == np.round(feats))
    with pytest.raises(ValueError, match="PCA"):
        VGGishExtractor(model, None, output="pca")


def test_no_weights_falls_back_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        extractor = build_extractor("vggish")
    assert isinstance(extractor, WeightFreeExtractor) and extractor.name == "weight_free"
    assert "NO VGGISH WEIGHTS" in caplog.text
    with pytest.raises(ValueError):
        build_extractor("mfcc")


def test_tf_conversion_matches_nhwc_convolution(weights_file: tuple[Path, dict]) -> None:
    """Conv kernels HWIO -> OIHW: the torch conv equals an NHWC correlation in numpy."""
    _, state = weights_file
    rng = np.random.default_rng(0)
    variables = {}
    for tf_name, prefix in TF_VARIABLES.items():
        weight = state[f"{prefix}.weight"].numpy()
        hwio = rng.normal(
            size=weight.shape[::-1] if weight.ndim == 2 else (3, 3, *weight.shape[1::-1])
        )
        variables[f"{tf_name}/weights"] = hwio.astype(np.float32)
        variables[f"{tf_name}/biases"] = rng.normal(size=weight.shape[0]).astype(np.float32)
    converted = tf_to_torch_state_dict(variables)
    np.testing.assert_array_equal(
        converted["embeddings.4.weight"].numpy(), variables["vggish/fc2/weights"].T
    )
    kernel = variables["vggish/conv1/weights"]  # (3, 3, 1, 64) HWIO
    image = rng.normal(size=(6, 5)).astype(np.float32)  # (H, W), one input channel
    padded = np.pad(image, 1)
    expected = np.zeros((6, 5, 64))
    for dy in range(3):
        for dx in range(3):
            expected += padded[dy : dy + 6, dx : dx + 5, None] * kernel[dy, dx, 0][None, None, :]
    got = torch.nn.functional.conv2d(
        torch.from_numpy(image)[None, None], converted["features.0.weight"], padding=1
    )[0].permute(1, 2, 0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    del variables["vggish/fc2/biases"]
    with pytest.raises(CheckpointError, match="fc2/biases"):
        tf_to_torch_state_dict(variables)
