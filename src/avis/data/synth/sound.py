"""Soundtracks: each sounding class's signature, gated per second by its schedule, mixed.

Second i of the soundtrack is the audio of frame i. A class signature is generated over the
whole video, normalised to a fixed RMS, multiplied by its gain envelope (constant per second,
with short linear ramps at changes), and the sources are summed with background noise.

Letters: N samples, T seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avis.data.synth.classes import SynthClass

SOURCE_RMS = 0.1
RAMP_SECONDS = 0.01
PEAK_LIMIT = 0.95
CLICK_SECONDS = 0.004  # decay constant scale of the broadband bursts of a pulse train
TABLE_SIZE = 8192  # wavetable length (phase resolution 2 pi / 8192)
ITD_SECONDS = 0.0006  # largest interaural time difference (a source at the far left or right)


def _phase(freq: np.ndarray, sr: int) -> np.ndarray:
    """Running phase in cycles (N,) of an instantaneous frequency track (N,) in Hz."""
    return np.cumsum(freq / sr)


def _lookup(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Wavetable oscillator: table (L,) over one period, read at phase `cycles` (N,)."""
    index = (np.mod(cycles, 1.0) * len(table)).astype(np.int64)
    return table[np.minimum(index, len(table) - 1)]


def _cycles(n: int, sr: int, freq: float, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) * (freq / sr) + rng.uniform()


SINE = np.sin(2 * np.pi * np.arange(TABLE_SIZE) / TABLE_SIZE).astype(np.float32)


def _tone(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    return _lookup(SINE, _cycles(n, sr, p["freq"], rng))


def _harmonic(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    period = np.arange(TABLE_SIZE) / TABLE_SIZE
    table = np.zeros(TABLE_SIZE)
    for k in range(1, int(p["harmonics"]) + 1):
        if k * p["freq"] < sr / 2:
            table += np.sin(2 * np.pi * (k * period + rng.uniform())) / k
    return _lookup(table.astype(np.float32), _cycles(n, sr, p["freq"], rng))


def _sweep(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    u = np.mod(_cycles(n, sr, p["rate"], rng), 1.0)  # position inside a sweep
    return _lookup(SINE, _phase(p["low"] * (p["high"] / p["low"]) ** u, sr))


def _noise_band(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    """A one-second band-limited noise loop (periodic, so it tiles without a seam)."""
    spectrum = np.fft.rfft(rng.standard_normal(sr))
    freqs = np.fft.rfftfreq(sr, 1.0 / sr)
    spectrum[(freqs < p["low"]) | (freqs > p["high"])] = 0
    loop = np.fft.irfft(spectrum, sr).astype(np.float32)
    return np.tile(loop, -(-n // sr))[:n]


def _pulses(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    click_len = int(CLICK_SECONDS * sr * 4)
    click = (rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (p["decay"] * sr))).astype(np.float32)
    period = sr / p["rate"]
    for start in np.arange(rng.uniform(0, period), n, period).astype(int):
        seg = out[start : start + click_len]
        seg += click[: len(seg)]
    return out


def _am_tone(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    envelope = 0.5 * (1.0 - _lookup(SINE, _cycles(n, sr, p["rate"], rng) + 0.25))  # raised cosine
    return envelope * _lookup(SINE, _cycles(n, sr, p["freq"], rng))


def _trill(n: int, sr: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    u = np.mod(_cycles(n, sr, p["rate"], rng), 1.0)
    return _lookup(SINE, _phase(np.where(u < 0.5, p["low"], p["high"]), sr))


SOUND_KINDS: dict[str, Callable[[int, int, dict, np.random.Generator], np.ndarray]] = {
    "tone": _tone,
    "harmonic": _harmonic,
    "sweep": _sweep,
    "noise_band": _noise_band,
    "pulses": _pulses,
    "am_tone": _am_tone,
    "trill": _trill,
}
FREQ_KEYS = ("freq", "low", "high")
RATE_KEYS = ("rate",)


def class_signal(
    cls: SynthClass, n: int, sr: int, rng: np.random.Generator, freq_jitter: float, detune: float = 1.0
) -> np.ndarray:
    """(N,) the class's signature with per-video jitter, at RMS SOURCE_RMS.

    detune: a further factor on its frequencies (a twin's own pitch in stereo scenes).
    """
    scale = (1.0 + rng.uniform(-freq_jitter, freq_jitter)) * detune
    params = {k: v * scale if k in FREQ_KEYS else v for k, v in cls.params.items()}
    params = {k: v * (1.0 + rng.uniform(-freq_jitter, freq_jitter)) if k in RATE_KEYS else v for k, v in params.items()}
    signal = SOUND_KINDS[cls.sound](n, sr, params, rng)
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))
    return (signal * np.float32(SOURCE_RMS / rms) if rms > 0 else signal).astype(np.float32)


def gain_envelope(gains: np.ndarray, sr: int) -> np.ndarray:
    """(N,) = (T * sr,) per-second gains (T,), with a linear ramp at the start of each change."""
    out = np.repeat(gains.astype(np.float32), sr)
    ramp = max(1, int(RAMP_SECONDS * sr))
    for i in np.flatnonzero(np.diff(gains)) + 1:
        out[i * sr : i * sr + ramp] = np.linspace(gains[i - 1], gains[i], ramp, dtype=np.float32)
    return out


def mix(signals: list[np.ndarray], gains: list[np.ndarray], sr: int, noise_level: float, rng: np.random.Generator, length: int) -> np.ndarray:
    """Float32 soundtrack: sum of gated sources + background noise, peak-limited. Sources (N,)
    give a mono (N,) track; stereo sources (N, 2) a stereo one with independent noise per
    channel (a diffuse background)."""
    channels = signals[0].shape[1:] if signals else ()
    out = rng.standard_normal((length * sr, *channels), dtype=np.float32) * np.float32(noise_level)
    for signal, gain in zip(signals, gains):
        out += signal * gain_envelope(gain, sr).reshape(-1, *(1 for _ in channels))
    peak = float(np.abs(out).max())
    if peak > PEAK_LIMIT:
        out *= PEAK_LIMIT / peak
    return out.astype(np.float32)


def pan_gains(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constant-power pan of horizontal positions x (N,) in [-1, 1] (left to right).

    Returns the (left, right) gains (N,) each, 1 at the centre: a source at x gives the
    channels' power ratio R^2 / L^2 = tan^2((x + 1) pi / 4), so x = (2 / pi) arcsin(p) with
    p = (R^2 - L^2) / (R^2 + L^2): `avis.audio.spatial` reads positions back that way.
    """
    theta = (np.clip(x, -1.0, 1.0) + 1.0) * (np.pi / 4)
    return np.sqrt(2.0) * np.cos(theta), np.sqrt(2.0) * np.sin(theta)


def place_source(signal: np.ndarray, x: np.ndarray, sr: int) -> np.ndarray:
    """(N, 2) stereo image of a mono source (N,) at horizontal positions x (N,) in [-1, 1].

    Level: constant-power pan (`pan_gains`). Time: the far ear hears the sound up to
    ITD_SECONDS later (ITD = ITD_SECONDS * sin(x pi / 2), a fractional delay read by linear
    interpolation), as a source at that azimuth would make it.
    """
    left_gain, right_gain = pan_gains(x)
    delay = ITD_SECONDS * np.sin(np.clip(x, -1.0, 1.0) * (np.pi / 2)) * sr  # (N,) samples, > 0: right first
    index = np.arange(len(signal), dtype=np.float64)
    left = np.interp(index - np.maximum(delay, 0.0), index, signal, left=0.0)
    right = np.interp(index - np.maximum(-delay, 0.0), index, signal, left=0.0)
    return np.stack([left * left_gain, right * right_gain], axis=1).astype(np.float32)


def to_pcm16(waveform: np.ndarray) -> bytes:
    """16-bit little-endian PCM of (N,) mono or (N, C) samples (interleaved)."""
    return (np.clip(waveform, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
