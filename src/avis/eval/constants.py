"""Thresholds shared by the metrics, written exactly as TrackEval builds them.

`np.arange` with a float step drifts (0.15000000000000002, 0.9500000000000004, ...): these are
the values the official evaluator compares against, so they are kept as they are.

Letters: A localisation thresholds (19), K track-IoU thresholds (10), R recall points (101).
"""

import numpy as np

EPS = np.finfo(float).eps  # TrackEval's tolerance in every threshold comparison
ALPHAS = np.arange(0.05, 0.99, 0.05)  # (A,) HOTA and FSLA thresholds
IOU_THRESHOLDS = np.arange(0.5, 0.96, 0.05)  # (K,) track mAP thresholds
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # (R,) where precision is sampled
AP50_INDEX = 0
AP75_INDEX = 5
# Area ranges of track mAP (pixels; inclusive, so neighbours share a boundary).
SMALL_MAX_AREA = 128**2
MEDIUM_MAX_AREA = 256**2
LARGE_MAX_AREA = 1e5**2
AREA_RANGES: dict[str, tuple[float, float]] = {
    "s": (0.0, SMALL_MAX_AREA),
    "m": (SMALL_MAX_AREA, MEDIUM_MAX_AREA),
    "l": (MEDIUM_MAX_AREA, LARGE_MAX_AREA),
}
PERCENT = 100.0
