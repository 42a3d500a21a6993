"""Read a soundtrack file: PCM WAV with the stdlib `wave` module, anything else with PyAV.

WAV samples keep their integer type (int16 stays int16, so the VGGish front end scales it by
1/32768 exactly as AVIS's `scipy.io.wavfile` path did); 24-bit PCM becomes int32 (left-aligned),
8-bit PCM stays uint8. Float or WAVE_FORMAT_EXTENSIBLE files the `wave` module rejects, and
every other container, are decoded by PyAV to float32.

A WAV file cut short (its header promises more frames than it holds, maybe ending inside a
sample) is read up to its last whole frame with a warning giving both numbers; a WAV whose
chunks the `wave` module cannot parse goes to PyAV, and a file neither reads is a MediaError.

Shape legend: N = samples, C = channels.
"""

from __future__ import annotations

import logging
import struct
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

_LOG = logging.getLogger(__name__)


def read_wav(path: str | Path, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """PCM WAV -> ((N, C) integer samples, sample rate): the whole file, or its first `seconds`.
    Raises MediaError (or wave.Error for formats the stdlib does not read, which `load_audio`
    hands to PyAV)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            promised = wav.getnframes()
            if seconds is not None:  # only what is needed: the header may promise hours
                promised = min(promised, int(np.ceil(seconds * rate)))
            raw = wav.readframes(promised)
    except (RuntimeError, struct.error, ValueError, OverflowError) as err:  # broken chunk sizes
        raise wave.Error(f"unreadable WAV chunks ({type(err).__name__}: {err})") from err
    frame_bytes = max(channels * width, 1)
    whole = len(raw) // frame_bytes
    if whole < promised:
        _LOG.warning(
            "%s: truncated WAV: the header promises %d frames (%.2f s), the file holds %d "
            "(%.2f s)%s", path, promised, promised / max(rate, 1), whole, whole / max(rate, 1),
            "; the partial last frame is dropped" if len(raw) % frame_bytes else "",
        )  # fmt: skip
        raw = raw[: whole * frame_bytes]
    if rate < 1:
        raise MediaError(f"{path}: WAV sample rate {rate}")
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


def load_audio(path: str | Path, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Any audio or video file -> ((N, C) samples, sample rate); MediaError if it has no audio.

    With `seconds`, about the first `seconds` of sound only (decoding stops there; a few
    hundred ms more may come with the last compressed frame): a 10-frame video's features
    need 10 s, whatever the length of its soundtrack.
    """
    path = Path(path)
    if path.suffix.lower() == ".wav":
        try:
            return read_wav(path, seconds)
        except (wave.Error, EOFError):
            pass  # float / extensible WAV: PyAV reads it
    from avis.io.video import read_audio

    decoded = read_audio(path, seconds=seconds)
    if decoded is None:
        raise MediaError(f"{path}: no audio stream")
    samples, rate, _ = decoded
    return samples, rate
