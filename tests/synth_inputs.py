"""What a model reads per frame of a synthetic soundtrack, as the benchmark's writer makes it."""

from __future__ import annotations

import numpy as np


def model_audio(waveform: np.ndarray, sample_rate: int, num_frames: int, spatial: bool) -> np.ndarray:
    """waveform (N,) or (N, 2) float in [-1, 1] -> (T, D) weight-free features, with the
    flattened (T, B*P) map of where the sound is appended for spatial-audio models (FEATSpatial)."""
    from avis.audio.features import weight_free_features
    from avis.audio.spatial import spatial_features

    pcm = (np.clip(waveform, -1, 1) * 32767).astype(np.int16)
    features = weight_free_features(pcm, sample_rate, num_frames)
    if not spatial:
        return features
    maps = spatial_features(pcm, sample_rate, num_frames).reshape(num_frames, -1)
    return np.concatenate([features, maps], axis=1).astype(np.float32)
