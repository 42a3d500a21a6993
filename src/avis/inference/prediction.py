"""Typed results of the predictor: a whole video (`Prediction`) or one frame (`FrameResult`).

A `Prediction` keeps each instance's masks as compressed RLE per frame (the results-JSON
encoding), so a long or high-resolution video does not hold N*T*H*W booleans; `masks()`
decodes them when a dense array is wanted.

Letters: N instances, T frames, H x W the original frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avis.inference.results import SCORE_DECIMALS, decode_rle, encode_mask
from avis.inference.summary import TrackSummary, summarize_tracks


@dataclass
class FrameResult:
    """The kept instances in one frame (the streaming API yields one per frame)."""

    index: int  # frame number, 0-based
    time: float  # seconds: index / fps
    scores: np.ndarray  # (N,) float32, the same for every frame of a video
    labels: np.ndarray  # (N,) int64 class index 0..K-1
    masks: np.ndarray  # (N, H, W) bool; empty where the instance is silent

    @property
    def sounding(self) -> np.ndarray:  # (N,) bool
        return np.asarray(self.masks.reshape(len(self.masks), -1).any(axis=1))


@dataclass
class Prediction:
    """Every kept instance track of one video, highest class probability first."""

    source: str  # the video path, or a name given by the caller
    fps: float
    num_frames: int  # T
    image_size: tuple[int, int]  # (H, W)
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    audio_features: str  # name of the audio feature extractor used ("precomputed" if given)
    rles: list[list[dict]] = field(default_factory=list)  # [N][T] compressed RLE
    duration: float | None = None  # seconds of media (a video file's); None: num_frames / fps

    @property
    def num_instances(self) -> int:
        return len(self.scores)

    @property
    def sounding(self) -> np.ndarray:
        """(N, T) bool: the instance's mask is not empty in that frame."""
        out = np.zeros((self.num_instances, self.num_frames), dtype=bool)
        for i, track in enumerate(self.rles):
            for t, rle in enumerate(track):
                out[i, t] = _rle_area(rle) > 0
        return out

    def masks(self) -> np.ndarray:
        """(N, T, H, W) bool, decoded from the RLEs."""
        out = np.zeros((self.num_instances, self.num_frames, *self.image_size), dtype=bool)
        for i, track in enumerate(self.rles):
            for t, rle in enumerate(track):
                out[i, t] = decode_rle(rle)
        return out

    def track_masks(self, i: int) -> RLETrack:
        """Instance i's masks as a lazy (T, H, W) sequence (one frame decoded per index)."""
        return RLETrack(self.rles[i], (self.num_frames, *self.image_size))

    def frame(self, t: int) -> FrameResult:
        masks = np.zeros((self.num_instances, *self.image_size), dtype=bool)
        for i, track in enumerate(self.rles):
            masks[i] = decode_rle(track[t])
        return FrameResult(t, t / self.fps, self.scores, self.labels, masks)

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else f"class_{label}"

    def summaries(self) -> list[TrackSummary]:
        return summarize_tracks(
            self.scores, self.labels, self.sounding, self.class_names, self.fps, self.duration
        )

    def records(self, video_id: int = 1, category_ids: list[int] | None = None) -> list[dict]:
        """AVISeg results records of this video (category ids label + 1 unless given)."""
        return [
            {
                "video_id": int(video_id),
                "score": round(float(score), SCORE_DECIMALS),
                "category_id": int(label) + 1 if category_ids is None else int(category_ids[label]),
                "segmentations": list(track),
            }
            for score, label, track in zip(self.scores, self.labels, self.rles)
        ]


@dataclass
class RLETrack:
    """One track's masks, decoded frame by frame: `track[t]` -> (H, W) bool."""

    rles: list[dict]  # [T] compressed RLE
    shape: tuple[int, int, int]  # (T, H, W)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        return decode_rle(self.rles[t])


class PredictionBuilder:
    """Collects per-frame mask blocks into the RLEs of a `Prediction`."""

    def __init__(self, num_instances: int) -> None:
        self.rles: list[list[dict]] = [[] for _ in range(num_instances)]

    def add_block(self, masks: np.ndarray) -> None:
        """masks (N, t, H, W) bool of the next t frames."""
        for i, track in enumerate(masks):
            self.rles[i].extend(encode_mask(frame) for frame in track)


def _rle_area(rle: dict) -> int:
    from pycocotools import mask as mask_util

    counts = rle["counts"]
    coded = {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(mask_util.area(coded))
