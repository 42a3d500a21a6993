"""Read a soundtrack file: PCM WAV with the stdlib `wave` module, anything else with PyAV.

WAV samples keep their integer type (int16 stays int16, so the VGGish front end scales it by
1/32768 exactly as AVIS's `scipy.io.wavfile` path did); 24-bit PCM becomes int32 (left-aligned),
8-bit PCM stays uint8. Float or WAVE_FORMAT_EXTENSIBLE files the `wave` module rejects, and
every other container, are decoded by PyAV to float32.

Shape legend: N = samples, C = channels.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np

from avis.errors import MediaError

_WAV_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype(np.uint8),
    2: np.dtype("<i2"),
    4: np.dtype("<i4"),
}
_INT24_BYTES = 3


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """PCM WAV -> ((N, C) integer samples, sample rate). Raises MediaError (or wave.Error
    for formats the stdlib does not read, which `load_audio` hands to PyAV)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == _INT24_BYTES:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _INT24_BYTES)
        padded = np.zeros((triples.shape[0], 4), dtype=np.uint8)
        padded[:, 1:] = triples  # little endian: the low byte stays zero -> value << 8
        samples = padded.view("<i4").reshape(-1)
    elif width in _WAV_DTYPES:
        samples = np.frombuffer(raw, dtype=_WAV_DTYPES[width])
    else:
        raise MediaError(f"{path}: unsupported WAV sample width {width} bytes")
    if channels < 1 or samples.shape[0] % channels:
        raise MediaError(
            f"{path}: truncated WAV data ({samples.shape[0]} samples, {channels} channels)"
        )
    return samples.reshape(-1, channels), int(rate)


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Any audio or video file -> ((N, C) samples, sample rate); MediaError if it has no audio."""
    path = Path(path)
    if path.suffix.lower() == ".wav":
        try:
            return read_wav(path)
        except (wave.Error, EOFError):
            pass  # float / extensible WAV: PyAV reads it
    from avis.io.video import read_audio

    decoded = read_audio(path)
    if decoded is None:
        raise MediaError(f"{path}: no audio stream")
    samples, rate, _ = decoded
    return samples, rate
