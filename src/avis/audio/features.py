"""Per-second 128-d audio features: the weight-free extractor and the extractor interface.

AVISM consumes one 128-d vector per 1-second frame. Two extractors share one interface:

* `WeightFreeExtractor` ("weight_free"): per-band mean and standard deviation over time of
  the same (96, 64) VGGish log-mel patch -> 64 + 64 = 128 values. No weights needed.
* `VGGishExtractor` ("vggish", `avis.audio.vggish`): the AVIS embedding (fc2 after ReLU).

Shape legend: N = samples, C = channels, S = seconds, F = frames (96), B = mel bands (64),
D = feature size (128).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from avis.audio.frontend import EXAMPLE_FRAMES, NUM_MEL_BANDS, log_mel_examples

__all__ = [
    "FEATURE_DIM",
    "EXTRACTOR_KINDS",
    "AudioFeatureExtractor",
    "WeightFreeExtractor",
    "build_extractor",
    "log_mel_examples",
    "weight_free_features",
]

FEATURE_DIM = 128
EXTRACTOR_KINDS = ("weight_free", "vggish")
NO_WEIGHTS_WARNING = (
    "NO VGGISH WEIGHTS GIVEN: using the weight-free audio features (per-band mean/std of the "
    "log-mel patch). These are NOT the VGGish embeddings AVIS was trained with; models trained "
    "on one kind of feature do not work with the other."
)

_LOG = logging.getLogger(__name__)


def weight_free_features(waveform: np.ndarray, sample_rate: int, num_seconds: int) -> np.ndarray:
    """(S, D) = (num_seconds, 128) float32: [mean over frames | std over frames] per mel band.

    waveform: (N,) mono or (N, C), any int/float dtype. Seconds without enough audio give 0.
    """
    examples = log_mel_examples(waveform, sample_rate, num_seconds).astype(np.float64)  # (S, F, B)
    assert examples.shape[1:] == (EXAMPLE_FRAMES, NUM_MEL_BANDS)
    mean = examples.mean(axis=1)  # (S, B)
    std = examples.std(axis=1)  # (S, B)
    return np.concatenate([mean, std], axis=1).astype(np.float32)


@runtime_checkable
class AudioFeatureExtractor(Protocol):
    """Turns a waveform into one D-dim feature per second."""

    name: str

    def __call__(self, waveform: np.ndarray, sample_rate: int, num_seconds: int) -> np.ndarray:
        """waveform (N,) or (N, C) at sample_rate -> (num_seconds, 128) float32."""
        ...


class WeightFreeExtractor:
    """`weight_free_features` as an `AudioFeatureExtractor`."""

    name = "weight_free"

    def __call__(self, waveform: np.ndarray, sample_rate: int, num_seconds: int) -> np.ndarray:
        return weight_free_features(waveform, sample_rate, num_seconds)


def build_extractor(
    kind: str = "weight_free",
    weights: str | Path | None = None,
    pca_params: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
) -> AudioFeatureExtractor:
    """Build an extractor by kind ("weight_free" or "vggish").

    kind="vggish" without weights falls back to the weight-free extractor and logs a loud
    warning (also printed to stderr). pca_params (torchvggish PCA file) switches the VGGish
    output to the PCA + 8-bit quantised embedding; the AVIS default is without.
    """
    if kind not in EXTRACTOR_KINDS:
        raise ValueError(f"extractor kind must be one of {EXTRACTOR_KINDS}, got {kind!r}")
    if kind == "vggish" and weights is not None:
        from avis.audio.vggish import VGGishExtractor

        return VGGishExtractor.from_files(
            weights, pca_params=pca_params, device=device, batch_size=batch_size
        )
    if kind == "weight_free" and weights is not None:
        _LOG.warning("weights %s ignored: the weight-free extractor has no weights", weights)
    _LOG.warning(NO_WEIGHTS_WARNING)
    return WeightFreeExtractor()
