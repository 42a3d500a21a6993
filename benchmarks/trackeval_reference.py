"""Timing reference for benchmarks/eval_speed.py: TrackEval's own pipeline on the same files.

The official AVIS evaluator is a trimmed copy of TrackEval's YouTube-VIS pipeline whose GT
reader rasterises polygon masks (frPyObjects + merge) plus FSLA. This runs stock `trackeval`
(PyPI) the same way, single process, with a reader patched to rasterise polygons, and the
official metric configuration; FSLA is not included, so this is a lower bound of the official
evaluator's time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

AREA_RANGES = [[0, 128**2], [128**2, 256**2], [256**2, 1e5**2]]
SPLIT = "test"
TRACKER = "model_final"


def _polygon_reader():
    from pycocotools import mask as mask_utils
    from trackeval.datasets import YouTubeVIS

    class PolygonYouTubeVIS(YouTubeVIS):
        def _prepare_gt_annotations(self):
            for track in self.gt_data["annotations"]:
                h, w = track["height"], track["width"]
                for i, seg in enumerate(track["segmentations"]):
                    if seg:
                        track["segmentations"][i] = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                areas = [a for a in track["areas"] if a]
                track["area"] = np.array(areas).mean() if areas else 0

    return PolygonYouTubeVIS


def reference_scores(gt_path: str, pred_path: str) -> dict[str, float]:
    import trackeval

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_dir = root / "gt" / f"youtube_vis_{SPLIT}"
        tr_dir = root / "trackers" / f"youtube_vis_{SPLIT}" / TRACKER / "data"
        gt_dir.mkdir(parents=True)
        tr_dir.mkdir(parents=True)
        os.symlink(Path(gt_path).resolve(), gt_dir / "gt.json")
        os.symlink(Path(pred_path).resolve(), tr_dir / "results.json")
        dataset = _polygon_reader()({
            "GT_FOLDER": str(root / "gt") + "/", "TRACKERS_FOLDER": str(root / "trackers") + "/",
            "SPLIT_TO_EVAL": SPLIT, "OUTPUT_FOLDER": str(root / "out"), "PRINT_CONFIG": False,
        })  # fmt: skip
        evaluator = trackeval.Evaluator({
            "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
            "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False, "LOG_ON_ERROR": None,
        })  # fmt: skip
        metrics = [
            trackeval.metrics.HOTA({"PRINT_CONFIG": False}),
            trackeval.metrics.TrackMAP({
                "USE_TIME_RANGES": False, "AREA_RANGES": AREA_RANGES, "PRINT_CONFIG": False,
            }),  # fmt: skip
        ]
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            res, msg = evaluator.evaluate([dataset], metrics)
    name = dataset.get_name()
    if msg[name][TRACKER] != "Success":
        raise RuntimeError(json.dumps(msg))
    combined = res[name][TRACKER]["COMBINED_SEQ"]["cls_comb_cls_av"]
    return {
        "HOTA": float(np.round(100 * np.mean(combined["HOTA"]["HOTA"]), 2)),
        "AP_all": float(np.round(100 * np.mean(combined["TrackMAP"]["AP_all"]), 2)),
    }
