"""The VGGish log-mel front end against the official reference files, and its edge cases."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from avis.audio import frontend
from avis.audio.features import log_mel_examples, weight_free_features
from avis.audio.resample import resample
from avis.errors import MediaError
from shared_data import AUDIO_REFERENCE

REFERENCE_DIR = AUDIO_REFERENCE
# README: a float32 implementation of the same algorithm must match within atol 1e-3; ours
# computes in float64 and only casts at the end, so it must also meet the float64 bound.
FLOAT32_ATOL = 1e-3
FLOAT64_ATOL = 1e-6

needs_reference = pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason="no reference data")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.reshape(-1, wav.getnchannels()), wav.getframerate()


def _reference_cases() -> list[Path]:
    return sorted(REFERENCE_DIR.glob("*.examples.npy")) if REFERENCE_DIR.is_dir() else []


@needs_reference
@pytest.mark.parametrize("npy", _reference_cases(), ids=lambda p: p.name.split(".")[0])
def test_matches_official_examples(npy: Path) -> None:
    expected = np.load(npy)
    samples, sr = _read_wav(npy.with_name(npy.name.replace(".examples.npy", ".wav")))
    got = log_mel_examples(samples, sr, expected.shape[0])
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT64_ATOL)
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_ATOL)


@needs_reference
def test_zero_seconds_match_manifest() -> None:
    manifest = json.loads((REFERENCE_DIR / "manifest.json").read_text())
    for entry in manifest["files"]:
        if "examples" not in entry or not entry.get("examples"):
            continue
        samples, sr = _read_wav(REFERENCE_DIR / entry["wav"])
        got = log_mel_examples(samples, sr, entry["num_secs"])
        zero = [i for i in range(got.shape[0]) if not got[i].any()]
        assert zero == entry["all_zero_seconds"], entry["name"]


@needs_reference
def test_mono_file_is_one_channel() -> None:
    """The official code crashes on mono; we treat a 1-D array as a single channel."""
    samples, sr = _read_wav(REFERENCE_DIR / "e_mono_22k05_3s.wav")
    mono = log_mel_examples(samples[:, 0], sr, 3)
    duplicated = log_mel_examples(np.repeat(samples, 2, axis=1), sr, 3)
    np.testing.assert_array_equal(mono, duplicated)
    assert np.all(mono > np.log(frontend.LOG_OFFSET) - 1e-6)


def test_mel_matrix_properties() -> None:
    matrix = frontend.mel_matrix()
    assert matrix.shape == (frontend.FFT_LENGTH // 2 + 1, frontend.NUM_MEL_BANDS)
    assert not matrix[0].any()
    assert matrix.max() <= 1.0 and matrix.min() >= 0.0
    peaks = matrix.argmax(axis=0)
    assert np.all(np.diff(peaks) >= 0)  # bands go from low to high frequency
    hz_per_bin = frontend.SAMPLE_RATE / frontend.FFT_LENGTH
    assert peaks[0] * hz_per_bin < 200 and peaks[-1] * hz_per_bin > 7000


def test_silence_gives_log_floor_and_short_chunks_zero() -> None:
    sr = 16000
    audio = np.zeros(2 * sr + frontend.EXAMPLE_SAMPLES - 1, dtype=np.int16)
    out = log_mel_examples(audio, sr, 4)
    np.testing.assert_allclose(out[:2], np.log(frontend.LOG_OFFSET), rtol=0, atol=1e-6)
    assert not out[2:].any()  # 15 599 samples -> zeros; no audio at all -> zeros (no crash)


@pytest.mark.parametrize("extra", [1, 100, 239, 240, 15599])
def test_tiny_last_chunk_is_zero_not_crash(extra: int) -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, size=(44100 + extra, 2))
    out = log_mel_examples(audio, 44100, 3)
    assert out[0].any() and not out[1].any() and not out[2].any()


def test_exact_threshold_at_16k() -> None:
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 0.1, size=frontend.EXAMPLE_SAMPLES)
    assert log_mel_examples(audio, 16000, 1).any()
    assert not log_mel_examples(audio[:-1], 16000, 1).any()


def test_sample_formats_agree() -> None:
    rng = np.random.default_rng(2)
    as_float = rng.uniform(-0.5, 0.5, size=(22050, 2))
    as_int16 = np.round(as_float * 32768).astype(np.int16)
    as_int32 = as_int16.astype(np.int32) << 16
    ref = log_mel_examples(as_int16, 22050, 1)
    np.testing.assert_allclose(log_mel_examples(as_int32, 22050, 1), ref, atol=1e-6)
    np.testing.assert_allclose(log_mel_examples(as_int16 / 32768.0, 22050, 1), ref, atol=1e-6)
    np.testing.assert_allclose(
        log_mel_examples(as_float.astype(np.float32), 22050, 1), ref, atol=2e-3
    )


def test_tone_lands_in_the_right_band() -> None:
    sr = 48000
    t = np.arange(sr) / sr
    out = log_mel_examples(0.5 * np.sin(2 * np.pi * 1000.0 * t), sr, 1)
    band = out[0].mean(axis=0).argmax()
    centres = np.linspace(frontend.hz_to_mel(125.0), frontend.hz_to_mel(7500.0), 66)[1:-1]
    assert abs(centres[band] - frontend.hz_to_mel(1000.0)) < 40.0


def test_resampler_lengths_and_passband() -> None:
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 500.0 * t)
    out = resample(tone, 44100, 16000)
    assert out.shape == (16000,)
    expected = np.sin(2 * np.pi * 500.0 * np.arange(16000) / 16000)
    # away from the edges (zeros outside the chunk) the band-limited tone is reproduced
    np.testing.assert_allclose(out[2000:-2000], expected[2000:-2000], atol=1e-3)
    up = resample(tone[:11025], 11025, 16000)
    assert up.shape == (16000,)


def test_weight_free_features_shape_and_meaning() -> None:
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 0.1, size=(3 * 16000, 1)).astype(np.float32)
    feats = weight_free_features(audio, 16000, 4)
    assert feats.shape == (4, 128) and feats.dtype == np.float32
    examples = log_mel_examples(audio, 16000, 4)
    np.testing.assert_allclose(feats[:, :64], examples.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(feats[:, 64:], examples.std(axis=1), atol=1e-5)
    assert not feats[3].any()


def test_bad_shapes_raise() -> None:
    with pytest.raises(MediaError):
        log_mel_examples(np.zeros((2, 16000)), 16000, 1)
    with pytest.raises(MediaError):
        log_mel_examples(np.zeros((2, 2, 2)), 16000, 1)
    with pytest.raises(MediaError):
        log_mel_examples(np.zeros(16000), 0, 1)


def test_multichannel_is_channel_mean() -> None:
    rng = np.random.default_rng(4)
    quad = (rng.normal(0, 0.1, size=(44100, 4)) * 32767).astype(np.int16)
    mean = quad.astype(np.float64).mean(axis=1) / 32768.0
    np.testing.assert_array_equal(
        log_mel_examples(quad, 44100, 1), log_mel_examples(mean, 44100, 1)
    )
