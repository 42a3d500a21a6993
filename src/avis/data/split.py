"""One split of an AVISeg-layout data set on disk: annotations + frames + audio features.

    <root>/<split>.json
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/WAVAudios/<video>.wav
    <root>/<split>/FEATAudios/<video>.npy      float (T, D)

`load_split` validates the annotations, checks that every frame file and every audio feature
file exists, and reads the feature headers (shape only). Frames and features are read on use.

Audio policy, when a feature file has a number of rows T_a different from the frame count T:
- "pad": zero rows are appended (T_a < T) or extra rows dropped (T_a > T); the video keeps T frames.
- "trim": the video is cut to min(T, T_a) frames (file names and tracks too); extra rows dropped.
- "error": raise DataError.
Every mismatch is logged (WARNING) with the video and both lengths.

Letters: T frames, D audio feature size, H x W frame size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from avis.data.annotations import Annotations, Category, TrackRecord, VideoRecord, read_annotations
from avis.data.paths import check_split_name
from avis.errors import DataError
from avis.io.npy import load_npy

log = logging.getLogger(__name__)

AudioPolicy = Literal["pad", "trim", "error"]
AUDIO_POLICIES: tuple[str, ...] = ("pad", "trim", "error")
FRAMES_DIR = "JPEGImages"
WAV_DIR = "WAVAudios"
FEAT_DIR = "FEATAudios"
SPATIAL_DIR = "FEATSpatial"  # (T, bands, positions) maps of where the sound is (avis.audio.spatial)
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class AVISegSplit:
    """A validated split. Class index (0..K-1) = position of the category id in sorted ids."""

    root: Path
    split: str
    videos: list[VideoRecord]
    tracks: dict[int, list[TrackRecord]]  # video id -> its tracks, in file order
    categories: list[Category]  # sorted by id
    audio_lengths: dict[int, int]  # video id -> T_a rows in its feature file
    audio_dim: int  # D
    audio_policy: AudioPolicy = "pad"
    spatial_shape: tuple[int, int] | None = None  # (bands, positions) of FEATSpatial, when loaded

    def __post_init__(self) -> None:
        self._by_id = {v.id: v for v in self.videos}
        self._label = {c.id: i for i, c in enumerate(self.categories)}

    @property
    def split_dir(self) -> Path:
        return self.root / self.split

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def video(self, video_id: int) -> VideoRecord:
        return self._by_id[video_id]

    def label(self, category_id: int) -> int:
        """Class index 0..K-1 of a dataset category id."""
        return self._label[category_id]

    def category_id(self, label: int) -> int:
        return self.categories[label].id

    def frame_path(self, video: VideoRecord, t: int) -> Path:
        return self.split_dir / FRAMES_DIR / video.file_names[t]

    def wav_path(self, video: VideoRecord) -> Path:
        return self.split_dir / WAV_DIR / f"{video.name}.wav"

    def feature_path(self, video: VideoRecord) -> Path:
        return self.split_dir / FEAT_DIR / f"{video.name}.npy"

    def spatial_path(self, video: VideoRecord) -> Path:
        return self.split_dir / SPATIAL_DIR / f"{video.name}.npy"

    def load_spatial(self, video: VideoRecord) -> np.ndarray:
        """(T, B, P) float32 maps of where the sound is (avis.audio.spatial), rows matched to
        the frames like the audio features (zero rows past the file's end)."""
        if self.spatial_shape is None:
            raise ValueError(f"split '{self.split}' was loaded without spatial audio (load_split(..., spatial_audio=True))")
        path = self.spatial_path(video)
        maps = load_npy(path, f"spatial audio of video {video.id}").astype(np.float32, copy=False)
        if maps.ndim != 3 or maps.shape[1:] != self.spatial_shape:
            raise DataError(f"{path}: expected shape (T, {self.spatial_shape[0]}, {self.spatial_shape[1]}), found {maps.shape}")
        _check_finite(maps.reshape(len(maps), -1), path, f"video {video.id} ('{video.name}')")
        rows = maps[: video.length]
        if len(rows) < video.length:
            rows = np.concatenate([rows, np.zeros((video.length - len(rows), *self.spatial_shape), np.float32)])
        return np.ascontiguousarray(rows)

    def load_audio_input(self, video: VideoRecord) -> np.ndarray:
        """(T, D [+ B*P]) what a model reads per frame: the audio features, followed by the
        flattened spatial map when the split was loaded with spatial audio."""
        audio = self.load_audio(video)
        if self.spatial_shape is None:
            return audio
        return np.concatenate([audio, self.load_spatial(video).reshape(len(audio), -1)], axis=1)

    def load_frames(self, video: VideoRecord, indices: list[int] | np.ndarray | None = None) -> np.ndarray:
        """(t, H, W, 3) uint8 RGB frames (all frames when indices is None)."""
        frame_indices = range(video.length) if indices is None else indices
        frames = []
        for t in frame_indices:
            path = self.frame_path(video, int(t))
            try:
                with Image.open(path) as img:
                    rgb = np.asarray(img.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as err:  # bomb: a hostile header
                raise DataError(f"{path}: cannot read frame {t} of video {video.id} ({err})") from None
            if rgb.shape[:2] != (video.height, video.width):
                raise DataError(
                    f"{path}: frame {t} of video {video.id} is {rgb.shape[0]}x{rgb.shape[1]}, "
                    f"the annotation says {video.height}x{video.width}"
                )
            frames.append(rgb)
        return np.stack(frames)

    def load_audio(self, video: VideoRecord) -> np.ndarray:
        """(T, D) float32 audio features, rows matched to the frames by the audio policy."""
        path = self.feature_path(video)
        feats = load_npy(path, f"audio features of video {video.id}").astype(np.float32, copy=False)
        if feats.ndim != 2 or feats.shape[1] != self.audio_dim:  # the file changed since loading
            raise DataError(f"{path}: expected shape (T, {self.audio_dim}), found {feats.shape}")
        _check_finite(feats, path, f"video {video.id} ('{video.name}')")
        rows = feats[: video.length]
        if len(rows) < video.length:
            rows = np.concatenate([rows, np.zeros((video.length - len(rows), self.audio_dim), np.float32)])
        return np.ascontiguousarray(rows)


def _read_feature_header(path: Path, where: str) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(f"{path}: audio feature file of {where} not found")
    arr = load_npy(path, f"audio features of {where}", mmap_mode="r")
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{path}: audio features of {where} must have shape (T, D), found {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: audio features of {where} must be floating point, found {arr.dtype}")
    _check_finite(arr, path, where)
    return int(arr.shape[0]), int(arr.shape[1])


def _read_spatial_header(path: Path, where: str, audio_rows: int) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(
            f"{path}: spatial audio map of {where} not found (this model reads where the sound is; "
            "stereo synthetic sets (--preset stereo) have them)"
        )
    arr = load_npy(path, f"spatial audio of {where}", mmap_mode="r")
    if arr.ndim != 3 or min(arr.shape) < 1 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: spatial audio of {where} must be floating point (T, bands, positions), found {arr.dtype} {arr.shape}")
    if arr.shape[0] != audio_rows:
        raise DataError(f"{path}: {arr.shape[0]} rows of spatial audio for {where}, its audio features have {audio_rows}")
    return int(arr.shape[1]), int(arr.shape[2])


def _check_finite(feats: np.ndarray, path: Path, where: str) -> None:
    """NaN or infinite features make the model drop the video's instances without an error."""
    finite = np.isfinite(feats)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"{path}: audio features of {where} hold {int((~finite).sum())} NaN or infinite "
            f"values (rows {', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''})"
        )


def _trim_video(video: VideoRecord, tracks: list[TrackRecord], length: int) -> tuple[VideoRecord, list[TrackRecord]]:
    def cut(values):
        return None if values is None else values[:length]

    video = replace(video, file_names=video.file_names[:length])
    tracks = [replace(t, segmentations=t.segmentations[:length], bboxes=cut(t.bboxes), areas=cut(t.areas)) for t in tracks]
    return video, tracks


def load_split(
    root: Path | str,
    split: str,
    *,
    audio_policy: AudioPolicy = "pad",
    check_files: bool = True,
    spatial_audio: bool = False,
) -> AVISegSplit:
    """Read and validate `<root>/<split>.json` and the files it refers to.

    spatial_audio: also the maps of where the sound is, `<split>/FEATSpatial/<video>.npy`
    (T_a, bands, positions), for models that read them (avis.audio.spatial)."""
    if audio_policy not in AUDIO_POLICIES:
        raise ValueError(f"audio_policy must be one of {AUDIO_POLICIES}, got {audio_policy!r}")
    root = Path(root)
    check_split_name(split)
    ann: Annotations = read_annotations(root / f"{split}.json")
    split_dir = root / split
    by_video = ann.tracks_by_video()
    videos: list[VideoRecord] = []
    tracks: dict[int, list[TrackRecord]] = {}
    audio_lengths: dict[int, int] = {}
    dims: dict[int, int] = {}  # feature size D -> first video id with it
    spatial_shapes: dict[tuple[int, int], int] = {}  # (bands, positions) -> first video id
    for video in ann.videos:
        where = f"video {video.id} ('{video.name}')"
        if check_files:
            for t, name in enumerate(video.file_names):
                if not (split_dir / FRAMES_DIR / name).is_file():
                    raise DataError(f"{split_dir / FRAMES_DIR / name}: frame {t} of {where} (file_names[{t}]) not found on disk")
        n_rows, dim = _read_feature_header(split_dir / FEAT_DIR / f"{video.name}.npy", where)
        dims.setdefault(dim, video.id)
        if spatial_audio:
            spatial_shapes.setdefault(_read_spatial_header(split_dir / SPATIAL_DIR / f"{video.name}.npy", where, n_rows), video.id)
        video_tracks = by_video[video.id]
        if n_rows != video.length:
            msg = f"{split_dir / FEAT_DIR / video.name}.npy: {where} has {video.length} frames but {n_rows} audio feature rows"
            if audio_policy == "error":
                raise DataError(msg + " (audio policy 'error')")
            if audio_policy == "trim" and n_rows < video.length:
                video, video_tracks = _trim_video(video, video_tracks, n_rows)
                log.warning("%s: trimmed the video to %d frames (audio policy 'trim')", msg, n_rows)
            else:
                action = "padded with zero rows" if n_rows < video.length else "dropped the extra rows"
                log.warning("%s: %s (audio policy '%s')", msg, action, audio_policy)
        videos.append(video)
        tracks[video.id] = video_tracks
        audio_lengths[video.id] = n_rows
    if len(dims) > 1:
        raise DataError(f"{split_dir / FEAT_DIR}: audio features differ in size D: {sorted(dims)} (e.g. videos {sorted(dims.values())})")
    audio_dim = next(iter(dims)) if dims else 0
    if len(spatial_shapes) > 1:
        raise DataError(f"{split_dir / SPATIAL_DIR}: spatial audio maps differ in shape: {sorted(spatial_shapes)}")
    spatial_shape = next(iter(spatial_shapes), None)  # None: not asked for (or no videos)
    categories = sorted(ann.categories, key=lambda c: c.id)
    return AVISegSplit(
        root=root, split=split, videos=videos, tracks=tracks, categories=categories,
        audio_lengths=audio_lengths, audio_dim=audio_dim, audio_policy=audio_policy,
        spatial_shape=spatial_shape,
    )  # fmt: skip
