"""Records of the online mode: one JSON object per emitted second, and the whole-stream
`Prediction` assembled from them at the end.

A record (one line of `online.jsonl`):
    {"frame": t, "time": t / fps,
     "instances": [{"track_id": 3, "label": 0, "category_id": 1, "class": "beeper",
                    "score": 0.81, "sounding": true, "segmentation": RLE}, ...]}
plus "frames_behind" when the stream is paced in real time. `segmentation` is the compressed
RLE of the instance's mask at the original size (empty when it is silent).

The assembled `Prediction` has one track per track id: its masks as emitted (empty in the
frames where it was not emitted), and the class and score it had in its last record (the
class-probability vote and mean window score over its life, `avis.inference.online`).

Letters: N tracks, T frames, H x W frame size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from avis.inference.prediction import Prediction
from avis.inference.results import SCORE_DECIMALS, encode_mask

_LOG = logging.getLogger(__name__)


def frame_record(frame, class_names: Sequence[str], extra: dict | None = None) -> dict:
    """An `OnlineFrame` -> its JSON record (masks as RLE)."""
    instances = []
    sounding = frame.sounding
    for i, (track_id, score, label) in enumerate(zip(frame.track_ids, frame.scores, frame.labels)):
        label = int(label)
        instances.append({
            "track_id": int(track_id), "label": label, "category_id": label + 1,
            "class": class_names[label] if 0 <= label < len(class_names) else f"class_{label}",
            "score": round(float(score), SCORE_DECIMALS), "sounding": bool(sounding[i]),
            "segmentation": encode_mask(frame.masks[i]),
        })  # fmt: skip
    record = {"frame": int(frame.index), "time": round(float(frame.time), 6), "instances": instances}
    if extra:
        record.update(extra)
    return record


class PredictionAssembler:
    """Collects records, in frame order, into a whole-stream `Prediction`."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_frames = 0
        self.tracks: dict[int, dict] = {}  # id -> {"label", "score", "rles": {t: RLE}}

    def add(self, record: dict) -> None:
        t = int(record["frame"])
        if t != self.num_frames:
            raise ValueError(f"records must come in frame order: expected frame {self.num_frames}, got {t}")
        self.num_frames = t + 1
        for inst in record["instances"]:
            track = self.tracks.setdefault(int(inst["track_id"]), {"rles": {}})
            track["label"], track["score"] = int(inst["label"]), float(inst["score"])
            if inst["sounding"]:
                track["rles"][t] = inst["segmentation"]

    def prediction(self, source: str, fps: float, class_names: list[str], audio_features: str) -> tuple[Prediction, list[int]]:
        """-> (the tracks that sounded at least once, highest score first (ties: lower id
        first), their track ids in that order)."""
        empty = encode_mask(np.zeros(self.image_size, dtype=bool))
        items = [(track_id, t) for track_id, t in self.tracks.items() if t["rles"]]
        items.sort(key=lambda item: (-item[1]["score"], item[0]))
        rles = [[t["rles"].get(f, empty) for f in range(self.num_frames)] for _, t in items]
        prediction = Prediction(
            source=source, fps=fps, num_frames=self.num_frames, image_size=self.image_size,
            scores=np.asarray([t["score"] for _, t in items], dtype=np.float32),
            labels=np.asarray([t["label"] for _, t in items], dtype=np.int64),
            class_names=list(class_names), audio_features=audio_features, rles=rles,
        )  # fmt: skip
        return prediction, [track_id for track_id, _ in items]


def assemble(records: Iterable[dict], image_size: tuple[int, int], **kwargs) -> tuple[Prediction, list[int]]:
    """Records in frame order -> (`Prediction`, track ids); kwargs: source, fps, class_names,
    audio_features."""
    assembler = PredictionAssembler(image_size)
    for record in records:
        assembler.add(record)
    return assembler.prediction(**kwargs)


def read_records(path: Path) -> Iterable[dict]:
    """The records of a JSON-lines file, one at a time. A last line cut short (no newline, not
    valid JSON: the writer was killed inside it) is skipped with a warning; a broken line
    elsewhere is a DataError naming the line."""
    from avis.errors import DataError

    with Path(path).open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                if not line.endswith("\n"):
                    _LOG.warning("%s: line %d is cut short (an interrupted run): skipped", path, number)
                    return
                raise DataError(f"{path}: line {number} is not a JSON record ({err})") from None
