"""Prediction records in the AVISeg results format (what `avis eval --pred` reads).

One record per predicted track:
`{"video_id": int, "score": float, "category_id": 1..K, "segmentations": [RLE per frame]}`,
each RLE a compressed COCO run-length encoding `{"size": [H, W], "counts": str}` at the
original resolution, one per frame of the video (empty masks are still encoded).

Letters: N instances, T frames, H x W the original frame size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from avis.errors import DataError
from avis.io.atomic import write_json_atomic

SCORE_DECIMALS = 6  # scores are rounded so the JSON is byte-stable across runs and processes


def encode_mask(mask: np.ndarray) -> dict:
    """One (H, W) bool mask -> compressed RLE with a str `counts` (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """Compressed (str or bytes counts) or uncompressed RLE -> (H, W) bool mask."""
    if isinstance(rle.get("counts"), list):
        rle = mask_util.frPyObjects(rle, *rle["size"])
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_util.decode(rle).astype(bool)


def video_records(
    video_id: int,
    scores: Sequence[float] | np.ndarray,  # (N,)
    labels: Sequence[int] | np.ndarray,  # (N,) class index 0..K-1
    masks: np.ndarray,  # (N, T, H, W) bool
    category_ids: Sequence[int] | None = None,  # class index -> dataset id; default label + 1
) -> list[dict]:
    """The records of one video, in the given instance order (the model's score order)."""
    masks = np.asarray(masks)
    if masks.ndim != 4 or len(masks) != len(scores) or len(scores) != len(labels):
        raise ValueError(
            f"video {video_id}: expected scores (N,), labels (N,), masks (N, T, H, W); "
            f"got {len(scores)} scores, {len(labels)} labels, masks of shape {masks.shape}"
        )
    records = []
    for score, label, track in zip(scores, labels, masks):
        records.append(
            {
                "video_id": int(video_id),
                "score": round(float(score), SCORE_DECIMALS),
                "category_id": int(label) + 1 if category_ids is None else int(category_ids[label]),
                "segmentations": [encode_mask(frame) for frame in track],
            }
        )
    return records


def sort_records(records: Iterable[dict]) -> list[dict]:
    """Deterministic file order: by video id; inside a video the order is kept (stable)."""
    return sorted(records, key=lambda r: r["video_id"])


def write_results(records: Iterable[dict], path: Path) -> Path:
    """Write a results JSON list (sorted by video id, atomically) and return its path."""
    return write_json_atomic(path, sort_records(records), separators=(",", ":"))


def read_results(path: Path) -> list[dict]:
    """Read a results JSON list, checking the fields every record must have."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or encoding
        raise DataError(f"{path}: cannot read a results JSON list ({type(err).__name__})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, found {type(records).__name__}")
    for i, record in enumerate(records):
        for field in ("video_id", "score", "category_id", "segmentations"):
            if field not in record:
                raise DataError(f"{path}: record {i} has no field '{field}'")
    return records
