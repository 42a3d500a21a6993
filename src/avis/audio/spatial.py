"""Where the sound comes from: a per-second map of sound energy over frequency band and
horizontal position, read from the level difference of a stereo soundtrack.

For every short-time spectrum bin of second s the two channels' powers give a pan value
p = (R^2 - L^2) / (R^2 + L^2), read as the horizontal position x = (2 / pi) arcsin(p) in
[-1, 1] (left edge to right edge of the picture) that a constant-power pan would give it
(`avis.data.synth.sound.pan_gains`). The bin's energy L^2 + R^2 is spread over the two
position bins nearest to x (linear weights) in its frequency band. Each second's map is
normalised by its total energy and compressed:

    feature[s, b, j] = log(1 + bands * bins * E[s, b, j] / sum E[s])

so it says *where* each band's sound is, whatever the loudness (the 128-d features say how
loud). A mono soundtrack (L = R) puts everything at the centre. Phase differences are not
used: at 16 kHz with at most 0.6 ms between the ears they are ambiguous above ~800 Hz.

Letters: N samples, S seconds, F spectra per second, K frequency bins, B bands, P positions.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000  # maps are made at this rate (other rates are resampled per window)
SPATIAL_BANDS = 32
SPATIAL_BINS = 16
FFT_SIZE = 512  # 32 ms at 16 kHz
HOP = 256
LOW_HZ, HIGH_HZ = 100.0, 7800.0  # band edges are log-spaced in between
EPS = 1e-10


def band_edges(sample_rate: int, bands: int = SPATIAL_BANDS) -> np.ndarray:
    """(B + 1,) Hz: log-spaced edges from LOW_HZ to min(HIGH_HZ, Nyquist)."""
    high = min(HIGH_HZ, sample_rate / 2)
    return np.geomspace(LOW_HZ, high, bands + 1)


def spatial_features(
    waveform: np.ndarray,
    sample_rate: int,
    num_seconds: int,
    bands: int = SPATIAL_BANDS,
    bins: int = SPATIAL_BINS,
) -> np.ndarray:
    """(S, B, P) float32 map of each second's sound over band and horizontal position.

    waveform: (N, 2) stereo (left, right) or (N,) / (N, 1) mono, any int or float dtype.
    Second s reads samples [s * sr, (s + 1) * sr); seconds without audio are all zero.
    """
    x = np.asarray(waveform)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] not in (1, 2):
        raise ValueError(f"expected a waveform (N,), (N, 1) or (N, 2), got {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float64)
    if x.shape[1] == 1:
        x = np.repeat(x, 2, axis=1)
    n = num_seconds * sample_rate
    x = np.concatenate([x[:n], np.zeros((max(0, n - len(x)), 2))]) if len(x) != n else x
    per_second = x.reshape(num_seconds, sample_rate, 2)
    starts = np.arange(0, sample_rate - FFT_SIZE + 1, HOP)  # (F,)
    frames = per_second[:, starts[:, None] + np.arange(FFT_SIZE)]  # (S, F, FFT, 2)
    spec = np.fft.rfft(frames * np.hanning(FFT_SIZE)[:, None], axis=2)  # (S, F, K, 2)
    power = np.abs(spec) ** 2
    left, right = power[..., 0], power[..., 1]  # (S, F, K)
    energy = left + right
    pan = (right - left) / (energy + EPS)
    position = (2 / np.pi) * np.arcsin(np.clip(pan, -1.0, 1.0))  # (S, F, K) in [-1, 1]

    freqs = np.fft.rfftfreq(FFT_SIZE, 1.0 / sample_rate)
    band = np.searchsorted(band_edges(sample_rate, bands), freqs, side="right") - 1  # (K,)
    in_band = (band >= 0) & (band < bands)
    # position -> fractional bin index over bin centres -1 + (2j + 1) / P
    u = np.clip((position + 1) * bins / 2 - 0.5, 0.0, bins - 1.0)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, bins - 1)
    w_hi = u - lo
    second = np.arange(num_seconds)[:, None, None]
    cell_lo = (second * bands + band[None, None, :]) * bins + lo  # (S, F, K)
    cell_hi = (second * bands + band[None, None, :]) * bins + hi
    keep = np.broadcast_to(in_band, energy.shape)
    size = num_seconds * bands * bins
    grid = np.bincount(cell_lo[keep], (energy * (1 - w_hi))[keep], minlength=size)
    grid += np.bincount(cell_hi[keep], (energy * w_hi)[keep], minlength=size)
    grid = grid.reshape(num_seconds, bands, bins)
    total = grid.sum(axis=(1, 2), keepdims=True)
    share = np.where(total > 0, grid / np.maximum(total, EPS), 0.0)
    return np.log1p(share * (bands * bins)).astype(np.float32)


def window_maps(waveform: np.ndarray, sample_rate: int, starts: np.ndarray) -> np.ndarray:
    """(T, B, P) maps of the 1-second windows [starts[i], starts[i] + 1 s) of a soundtrack at
    any rate: (N,) mono or (N, C) samples, the first two channels read as left and right;
    each window is resampled to 16 kHz on its own (bounded memory for long soundtracks)."""
    from avis.audio.resample import resample

    x = np.asarray(waveform)
    x = x[:, :2] if x.ndim == 2 else x
    if np.issubdtype(x.dtype, np.integer):
        x = x / float(np.iinfo(x.dtype).max)
    window = int(round(sample_rate))
    maps = []
    for start in np.asarray(starts, dtype=np.float64):
        chunk = x[int(round(start * sample_rate)) :][:window]
        if len(chunk) and sample_rate != SAMPLE_RATE:
            chunk = resample(chunk, sample_rate, SAMPLE_RATE)
        maps.append(spatial_features(chunk, SAMPLE_RATE, 1)[0])
    return np.stack(maps) if maps else np.zeros((0, SPATIAL_BANDS, SPATIAL_BINS), np.float32)
