"""The VGGish log-mel front end, per second, exactly as AVIS's `wavfile_to_examples`.

For second i the chunk samples[i*sr : (i+1)*sr] is mixed to mono (mean over channels),
resampled to 16 kHz on its own (`avis.audio.resample`, resampy `kaiser_best` equivalent),
framed (400-sample periodic Hann window, hop 160, no padding), |rfft(512)|, projected on 64
HTK mel bands (125-7500 Hz, triangles linear in mel, no normalisation), ln(x + 0.01), and the
first 96 frames form the (96, 64) example. A chunk that gives fewer than 96 frames (fewer than
15 600 samples after resampling) yields an all-zero example.

Choices where the official code crashes (documented in docs/audio.md):
* mono input (1-D) is treated as one channel (official: IndexError);
* a chunk with 1..239 resampled samples or an empty chunk (num_seconds beyond the audio)
  yields zeros like any other too-short chunk (official: ValueError).
Integer samples are scaled by their full range (int16 / 32768, as the official code; int32 /
2**31; uint8 (x - 128) / 128); float samples are used as they are.

Shape legend: N = samples, C = channels, S = seconds, F = frames (96), B = mel bands (64),
K = FFT bins (257).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from avis.audio.resample import resample, resampled_length
from avis.errors import MediaError

SAMPLE_RATE = 16000
WINDOW_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
FFT_LENGTH = 512  # next power of two >= WINDOW_LENGTH
NUM_MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
HTK_MEL_BREAK_HZ = 700.0
HTK_MEL_HIGH_Q = 1127.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s patch
EXAMPLE_SAMPLES = (EXAMPLE_FRAMES - 1) * HOP_LENGTH + WINDOW_LENGTH  # 15 600
# More channels than this in axis 1 almost surely means a (channels, samples) array.
MAX_CHANNELS = 64


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return HTK_MEL_HIGH_Q * np.log1p(np.asarray(hz, dtype=np.float64) / HTK_MEL_BREAK_HZ)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """(K, B) float64 matrix mapping |rfft| bins to mel bands; row 0 (DC) is zero."""
    num_bins = FFT_LENGTH // 2 + 1
    bin_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, num_bins))  # (K,)
    edges = np.linspace(hz_to_mel(MEL_MIN_HZ), hz_to_mel(MEL_MAX_HZ), NUM_MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (B,)
    rising = (bin_mel[:, None] - lower) / (centre - lower)  # (K, B)
    falling = (upper - bin_mel[:, None]) / (upper - centre)  # (K, B)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def periodic_hann() -> np.ndarray:
    """(WINDOW_LENGTH,) periodic Hann window 0.5 - 0.5 cos(2 pi j / L)."""
    j = np.arange(WINDOW_LENGTH)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * j / WINDOW_LENGTH)
    window.setflags(write=False)
    return window


def to_float_mono(waveform: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) samples of any dtype -> (N,) float64 mono in [-1, 1] scale."""
    samples = np.asarray(waveform)
    if samples.ndim not in (1, 2):
        raise MediaError(
            f"waveform: expected shape (samples,) or (samples, channels), got {samples.shape}"
        )
    if samples.ndim == 2 and samples.shape[1] > MAX_CHANNELS:
        raise MediaError(
            f"waveform: expected (samples, channels) with at most {MAX_CHANNELS} channels, "
            f"got shape {samples.shape} (a (channels, samples) array? transpose it)"
        )
    if samples.dtype == np.uint8:
        scaled = (samples.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(samples.dtype, np.integer):
        scaled = samples.astype(np.float64) / float(-np.iinfo(samples.dtype).min)
    elif np.issubdtype(samples.dtype, np.floating):
        scaled = samples.astype(np.float64)
    else:
        raise MediaError(f"waveform: unsupported sample dtype {samples.dtype}")
    return scaled if scaled.ndim == 1 else scaled.mean(axis=1)


def chunk_log_mel(chunk: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """One second of mono float64 audio (N,) -> (F, B) float64 log-mel, or None if too short."""
    if resampled_length(chunk.shape[0], sample_rate, SAMPLE_RATE) < EXAMPLE_SAMPLES:
        return None
    audio = resample(chunk, sample_rate, SAMPLE_RATE)
    return log_mel_patch(audio)


def log_mel_patch(audio16k: np.ndarray) -> np.ndarray:
    """16 kHz mono (N >= 15 600,) -> (F, B) float64: the first 96 frames' log-mel."""
    starts = np.arange(EXAMPLE_FRAMES) * HOP_LENGTH
    frames = audio16k[starts[:, None] + np.arange(WINDOW_LENGTH)[None, :]]  # (F, 400)
    spectrum = np.abs(np.fft.rfft(frames * periodic_hann(), n=FFT_LENGTH, axis=1))  # (F, K)
    return np.log(spectrum @ mel_matrix() + LOG_OFFSET)


def log_mel_examples(waveform: np.ndarray, sample_rate: int, num_seconds: int) -> np.ndarray:
    """Per-second VGGish log-mel examples: (S, F, B) = (num_seconds, 96, 64) float32.

    waveform: (N,) mono or (N, C) multichannel, any int/float dtype, at sample_rate Hz.
    Second i uses samples [i*sr, (i+1)*sr); seconds without a full 0.975 s of audio are zeros.
    """
    if sample_rate <= 0:
        raise MediaError(f"sample_rate must be positive, got {sample_rate}")
    if num_seconds < 0:
        raise MediaError(f"num_seconds must be >= 0, got {num_seconds}")
    mono = to_float_mono(waveform)
    sr = int(sample_rate)
    examples = np.zeros((num_seconds, EXAMPLE_FRAMES, NUM_MEL_BANDS), dtype=np.float32)
    for second in range(num_seconds):
        patch = chunk_log_mel(mono[second * sr : (second + 1) * sr], sr)
        if patch is not None:
            examples[second] = patch
    return examples
