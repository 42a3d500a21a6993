"""avis.io.audio_file: WAV sample formats and the PyAV fallback give the same features."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from avis.audio.features import log_mel_examples
from avis.errors import MediaError
from avis.io.audio_file import load_audio, read_wav

RATE = 22050


def _write_pcm(path: Path, samples: np.ndarray, width: int) -> Path:
    """samples (N, C) int16 -> a PCM WAV of `width` bytes per sample holding the same values."""
    if width == 1:
        data = (samples.astype(np.int32) // 256 + 128).astype(np.uint8).tobytes()
    elif width == 2:
        data = samples.astype("<i2").tobytes()
    elif width == 3:
        wide = samples.astype("<i4") << 8
        data = wide.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = (samples.astype("<i4") << 16).tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(samples.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(RATE)
        wav.writeframes(data)
    return path


@pytest.fixture
def int16_stereo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(0, 0.1, size=(RATE + 500, 2)) * 32767).astype(np.int16)


@pytest.mark.parametrize("width", [2, 3, 4])
def test_pcm_widths_give_the_same_examples(
    tmp_path: Path, int16_stereo: np.ndarray, width: int
) -> None:
    samples, rate = read_wav(_write_pcm(tmp_path / f"w{width}.wav", int16_stereo, width))
    assert rate == RATE and samples.shape == int16_stereo.shape
    reference = log_mel_examples(int16_stereo, RATE, 2)
    np.testing.assert_allclose(log_mel_examples(samples, rate, 2), reference, atol=1e-6)


def test_int16_kept_exact(tmp_path: Path, int16_stereo: np.ndarray) -> None:
    samples, _ = read_wav(_write_pcm(tmp_path / "a.wav", int16_stereo, 2))
    assert samples.dtype == np.int16
    np.testing.assert_array_equal(samples, int16_stereo)


def test_8bit_unsigned(tmp_path: Path, int16_stereo: np.ndarray) -> None:
    samples, _ = read_wav(_write_pcm(tmp_path / "u8.wav", int16_stereo, 1))
    assert samples.dtype == np.uint8
    scaled = (samples.astype(np.float64) - 128) / 128
    assert np.abs(scaled - int16_stereo / 32768).max() < 2 / 128


def test_float_wav_and_other_containers_via_pyav(tmp_path: Path, int16_stereo: np.ndarray) -> None:
    as_float = (int16_stereo / 32768).astype(np.float32)
    for name, codec in (("f.wav", "pcm_f32le"), ("f.flac", "flac")):
        with av.open(str(tmp_path / name), "w") as container:
            stream = container.add_stream(codec, rate=RATE, layout="stereo")
            fmt = "flt" if codec == "pcm_f32le" else "s16"
            data = as_float if fmt == "flt" else int16_stereo
            frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt, layout="stereo")
            frame.sample_rate, frame.pts = RATE, 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        samples, rate = load_audio(tmp_path / name)
        assert rate == RATE and samples.dtype == np.float32 and samples.shape == as_float.shape
        np.testing.assert_allclose(samples, as_float, atol=1e-4)


def test_the_first_seconds_only(tmp_path: Path) -> None:
    """`seconds` reads the beginning of a long file only, WAV and compressed alike, and what it
    reads equals the beginning of the whole file."""
    rng = np.random.default_rng(1)
    long = (rng.normal(0, 0.1, size=(30 * RATE, 1)) * 32767).astype(np.int16)  # 30 s mono
    wav = _write_pcm(tmp_path / "long.wav", long, 2)
    head, rate = load_audio(wav, seconds=2.0)
    assert rate == RATE and head.shape == (2 * RATE, 1)
    np.testing.assert_array_equal(head, long[: 2 * RATE])
    assert load_audio(wav)[0].shape == long.shape  # without it: everything
    with av.open(str(tmp_path / "long.flac"), "w") as container:
        stream = container.add_stream("flac", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(long.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    head, _ = load_audio(tmp_path / "long.flac", seconds=2.0)
    assert 2 * RATE <= head.shape[0] < 3 * RATE  # up to the compressed frame holding 2 s
    whole, _ = load_audio(tmp_path / "long.flac")
    assert whole.shape[0] == long.shape[0]
    np.testing.assert_array_equal(head, whole[: head.shape[0]])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="nope.wav.*not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "junk.ogg").write_bytes(b"junk" * 50)
    with pytest.raises(MediaError, match="junk.ogg"):
        load_audio(tmp_path / "junk.ogg")
