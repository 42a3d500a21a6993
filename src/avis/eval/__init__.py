"""Evaluation: FSLA, HOTA and track mAP for AVISeg-style predictions (numpy/pycocotools/scipy).

    from avis.eval import evaluate
    result = evaluate("test.json", "results.json", protocol="official")
    result.metrics["FA"], result.metrics["HOTA"], result.metrics["AP_all"]
"""

from avis.eval.evaluate import METRIC_KEYS, PROTOCOLS, EvalResult, evaluate
from avis.eval.predictions import load_predictions
from avis.eval.records import GroundTruth, load_ground_truth

__all__ = [
    "METRIC_KEYS",
    "PROTOCOLS",
    "EvalResult",
    "GroundTruth",
    "evaluate",
    "load_ground_truth",
    "load_predictions",
]
