"""Read any video PyAV opens: frames sampled at a fixed rate, the soundtrack as float mono.

Sampling: frame i is the picture *displayed* at time t_i = i / fps, measured from the first
video frame (t = 0): the last decoded frame whose presentation time is <= t_i. Frames are
sampled for every t_i < video duration (last frame time + its duration), so a 5.28 s clip
gives 6 frames at 1 fps (t = 0..5). This is AVISeg's convention (frame i = second i).

Audio: decoded to float32, mixed to mono by the arithmetic mean over channels (as VGGish's
front end does), at its native sample rate, aligned to the video clock: sample k is at time
k / sample_rate after the first video frame (leading audio before the first frame is dropped,
a late audio start is padded with zeros). It is kept up to the end of the last sampled frame's
1-second window, (T - 1) / fps + 1 s, or less when the soundtrack ends earlier.

Limits (hostile or broken files): the first video stream that is not a cover picture (an audio
file's attached picture is no video) is read; a video whose header or frame timestamps reach
past `max_duration` (default `MAX_DURATION_S`, 24 h) is refused while decoding, before its
sampled frames (copies of one frame across a timestamp jump) fill the memory or the disk; the
soundtrack is decoded only up to the end of the last frame's audio window and a late start is
padded only up to that end, so a short video with hours of (well-compressed) audio or an audio
timestamp far in the future costs no more memory than its video.

Orientation and size: a frame is turned upright as its display matrix says (a phone's
portrait video is stored sideways with a 90-degree rotation; players and ffmpeg turn it, and so
does avis: frames, masks and overlays are all upright). Angles that are not a multiple of 90
degrees are rounded to the nearest quarter turn, with a warning. A stream whose frame size
changes midway (spliced files) is scaled to the first frame's size, with a warning, so that
every sampled frame has one shape.

Truncated files: when the decoded video (or audio) ends more than `TRUNCATION_TOLERANCE_S`
before the duration its container header promises, a warning says both numbers (a file cut
short by a failed copy decodes its first part without an error).

Memory: the sampled frames are kept in RAM up to `frame_memory_mb` (default 1 GiB, ~1 h of
360p at 1 fps); past that they move to an unlinked temporary file read through `np.memmap`, so
hours of video do not need their frames in RAM (the predictor reads them chunk by chunk).

Shape legend: T = sampled frames, H x W = frame size, N = audio samples, D = feature size.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import av
import numpy as np

from avis.audio.features import AudioFeatureExtractor
from avis.errors import MediaError

SILENT_SAMPLE_RATE = 16000
DEFAULT_FRAME_MEMORY_MB = 1024.0  # sampled frames kept in RAM up to this, then in a temp file
AUDIO_WINDOW_S = 1.0  # one feature = one second of audio starting at the frame's time
TRUNCATION_TOLERANCE_S = 0.5  # decoded this much less than the header promises: warn
MAX_DURATION_S = 24 * 3600.0  # longest video read (seconds of video, by its timestamps)
MAX_GAP_S = 3600.0  # online: longest jump of the timestamps (a live source has no duration)
_TIME_EPS = 1e-6  # seconds; absorbs float noise in presentation times

_LOG = logging.getLogger(__name__)


@dataclass
class DecodedVideo:
    path: Path
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (T,) float64 sampling times i / fps, seconds from the first frame
    frame_times: np.ndarray  # (T,) float64 presentation time of the frame shown at timestamps[i]
    fps: float  # sampling rate
    audio: np.ndarray  # (N,) float32 mono, sample k at k / sample_rate seconds
    sample_rate: int
    duration: float  # video stream duration in seconds
    has_audio: bool  # False: `audio` is synthetic silence (allow_silent=True)
    native_fps: float | None  # the stream's average frame rate, if known
    start_time: float = 0.0  # presentation time of the first video frame on the container clock
    stereo: np.ndarray | None = None  # (N, 2) float32 (left, right), kept on request (keep_stereo)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def audio_duration(self) -> float:
        return self.audio.shape[0] / self.sample_rate


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise MediaError(f"{path}: cannot be opened as a media file ({err})") from err


def video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    """The first video stream that is not an attached picture (the cover art of an audio file,
    a still that PyAV lists as a one-frame video stream); MediaError when there is none."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if container.streams.video:
        raise MediaError(
            f"{path}: no video stream, only a still cover picture (attached picture) of an "
            "audio file; audio-visual segmentation needs a video"
        )
    raise MediaError(f"{path}: no video stream (streams: {[s.type for s in container.streams]})")


def too_long(path: str | Path, seconds: float, max_duration: float, what: str) -> MediaError:
    return MediaError(
        f"{path}: the video is at least {seconds:.0f} s long ({what}), over the {max_duration:.0f} s "
        "avis reads (broken timestamps, or cut it shorter, e.g. with ffmpeg -t)"
    )


def _stream_duration(stream) -> float | None:
    """The duration the header announces for one stream, in seconds: the stream's own, else
    Matroska's per-track `DURATION` tag ("HH:MM:SS.nnnnnnnnn"), else None."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    try:
        hours, minutes, seconds = str(tag).split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return value if np.isfinite(value) and value >= 0 else None


def promised_duration(stream, container) -> float | None:
    """The duration the header announces for a stream (else the container, which is that of
    its longest stream), in seconds."""
    own = _stream_duration(stream)
    if own is not None:
        return own
    if container.duration is not None:
        return float(container.duration) / 1e6
    return None


def _warn_if_truncated(path: Path, what: str, decoded: float, promised: float | None) -> None:
    if promised is not None and promised - decoded > TRUNCATION_TOLERANCE_S:
        _LOG.warning(
            "%s: decoded %.2f s of %s, but the file header promises %.2f s: the file is "
            "probably truncated (results cover the decoded part only)",
            path, decoded, what, promised,
        )  # fmt: skip


def _frame_duration(
    frame: av.VideoFrame, stream: av.video.stream.VideoStream, gaps: list[float]
) -> float:
    if frame.duration and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    if gaps:
        return float(np.median(gaps))
    return float(1.0 / stream.average_rate) if stream.average_rate else 0.0


class _FrameStore:
    """Sampled frames in a list, moved to an unlinked temporary file past a byte budget."""

    def __init__(self, budget_bytes: float) -> None:
        self.budget = budget_bytes
        self.frames: list[np.ndarray] = []
        self.file: IO[bytes] | None = None  # tempfile.TemporaryFile once spilled
        self.count = 0
        self.shape: tuple[int, ...] | None = None  # (H, W, 3) of the frames appended

    def append(self, frame: np.ndarray) -> None:  # (H, W, 3) uint8
        self.shape = frame.shape
        self.count += 1
        if self.file is not None:
            self.file.write(np.ascontiguousarray(frame).tobytes())
            return
        self.frames.append(frame)
        if self.count * frame.nbytes > self.budget:
            self.file = tempfile.TemporaryFile(prefix="avis_frames_")  # noqa: SIM115 (lives on in the memmap)
            for kept in self.frames:
                self.file.write(np.ascontiguousarray(kept).tobytes())
            self.frames = []

    def __len__(self) -> int:
        return self.count

    def array(self) -> np.ndarray:
        """(T, H, W, 3) uint8: in memory, or a read-only memmap of the temporary file."""
        if self.file is None:
            return np.stack(self.frames)
        if self.shape is None:
            raise ValueError("frames spilled to a temporary file but no frame shape was recorded")
        self.file.flush()
        return np.memmap(self.file, dtype=np.uint8, mode="r", shape=(self.count, *self.shape))


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0-3) that show a frame of this display rotation upright.

    `rotation` is PyAV's `VideoFrame.rotation`: ffmpeg's display-matrix angle in degrees,
    counter-clockwise (-90 for the usual portrait phone video, which is shown turned 90 degrees
    clockwise).
    """
    if not np.isfinite(rotation):
        return 0
    return round(rotation / 90.0) % 4


class UprightFrames:
    """RGB arrays of decoded frames, turned upright, all of the first frame's displayed size."""

    def __init__(self, source: str | Path) -> None:
        self.source = source
        self.shape: tuple[int, int] | None = None  # (H, W) displayed, fixed by the first frame
        self.warned: set[str] = set()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:  # (H, W, 3) uint8
        rotation = float(frame.rotation or 0.0)
        turns = quarter_turns(rotation)
        if abs(rotation - 90.0 * round(rotation / 90.0)) > 1.0 and np.isfinite(rotation):
            self._warn_once("angle", f"{self.source}: display rotation {rotation:.1f} degrees is "
                            f"not a multiple of 90; shown turned by {90 * turns} degrees instead")  # fmt: skip
        if self.shape is None:
            h, w = (frame.height, frame.width) if turns % 2 == 0 else (frame.width, frame.height)
            self.shape = (h, w)
        stored = self.shape if turns % 2 == 0 else self.shape[::-1]  # (H, W) before turning
        if (frame.height, frame.width) != stored:
            self._warn_once("size", f"{self.source}: the frame size changes from "
                            f"{self.shape[1]}x{self.shape[0]} to {frame.width}x{frame.height} "
                            "midway; later frames are scaled to the first size")  # fmt: skip
            frame = frame.reformat(width=stored[1], height=stored[0])
        rgb = frame.to_ndarray(format="rgb24")  # (h, w, 3) as stored
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            _LOG.warning("%s", message)


def _sample_frames(
    path: Path, fps: float, store: _FrameStore, max_duration: float = MAX_DURATION_S
) -> tuple[_FrameStore, list[float], float, float | None, float]:
    """Decode the first video stream; return RGB frames, their times, duration, native fps, t0."""
    container = _open(path)
    with container:
        stream = video_stream(container, path)
        promised = _stream_duration(stream)
        if promised is not None and promised > max_duration:
            raise too_long(path, promised, max_duration, "its header says")
        stream.thread_type = "AUTO"
        native_fps = float(stream.average_rate) if stream.average_rate else None
        frames = store
        upright = UprightFrames(path)
        times: list[float] = []
        gaps: list[float] = []
        prev, prev_time, prev_rgb, t0, index = None, 0.0, None, None, 0
        try:
            for decoded_index, frame in enumerate(container.decode(stream)):
                raw_time = (
                    frame.time if frame.time is not None else decoded_index / (native_fps or 1.0)
                )
                if t0 is None:
                    t0 = raw_time
                time = raw_time - t0
                if time > max_duration:  # before the copies across the jump are made
                    raise too_long(path, time, max_duration, "a frame's timestamp")
                if prev is not None:
                    gaps.append(time - prev_time)
                    while index / fps < time - _TIME_EPS:  # prev is on screen at index / fps
                        prev_rgb = prev_rgb if prev_rgb is not None else upright(prev)
                        frames.append(prev_rgb)
                        times.append(prev_time)
                        index += 1
                prev, prev_time, prev_rgb = frame, time, None
        except av.error.FFmpegError as err:
            if prev is None:
                raise MediaError(f"{path}: video stream cannot be decoded ({err})") from err
            _LOG.warning("%s: decoding stopped early at %.2f s (%s)", path, prev_time, err)
        if prev is None:
            raise MediaError(f"{path}: the video stream has no decodable frame")
        assert t0 is not None, "t0 is set with the first decoded frame, before prev"
        duration = prev_time + _frame_duration(prev, stream, gaps)
        if duration > max_duration:  # the last frame's own duration
            raise too_long(path, duration, max_duration, "its last frame's duration")
        _warn_if_truncated(path, "video", duration, promised_duration(stream, container))
        while index / fps < duration - _TIME_EPS or index == 0:
            prev_rgb = prev_rgb if prev_rgb is not None else upright(prev)
            frames.append(prev_rgb)
            times.append(prev_time)
            index += 1
    return frames, times, duration, native_fps, float(t0)


def read_audio(
    path: str | Path, until: float | None = None, *, seconds: float | None = None
) -> tuple[np.ndarray, int, float] | None:
    """The first audio stream of any media file: (N, C) float32, sample rate, start time (s).

    None when the file has no audio stream. The start time is the first audio frame's
    presentation time on the container clock. With `until` (seconds on the container clock),
    or `seconds` (after the first audio frame), decoding stops at the first audio frame that
    starts after it (the samples past it are not needed, and hours of compressed silence
    would otherwise fill the memory).
    """
    path = Path(path)
    container = _open(path)
    stopped = False
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler, start, chunks = None, None, []
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=frame.sample_rate
                    )
                    rate = frame.sample_rate
                if start is None and frame.time is not None:
                    start = float(frame.time)
                    if seconds is not None:
                        until = start + seconds if until is None else min(until, start + seconds)
                if until is not None and frame.time is not None and frame.time > until:
                    stopped = True
                    break
                chunks += [out.to_ndarray() for out in resampler.resample(frame)]  # (C, n)
            if resampler is not None:
                chunks += [out.to_ndarray() for out in resampler.resample(None)]
        except av.error.FFmpegError as err:
            if not chunks:
                raise MediaError(f"{path}: audio stream cannot be decoded ({err})") from err
            _LOG.warning("%s: audio decoding stopped early (%s)", path, err)
        promised = promised_duration(stream, container)
    if resampler is None or not chunks:
        return np.zeros((0, 1), dtype=np.float32), int(stream.rate or SILENT_SAMPLE_RATE), start or 0.0
    samples = np.concatenate(chunks, axis=1).T.astype(np.float32)  # (N, C)
    if not stopped:
        _warn_if_truncated(path, "audio", samples.shape[0] / rate, promised)
    check_finite_audio(samples, path)
    return samples, int(rate), start or 0.0


def check_finite_audio(samples: np.ndarray, path: str | Path) -> None:
    """MediaError when decoded samples hold NaN or infinity (a float WAV can): the audio
    features and every prediction made from them would be silently wrong."""
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise MediaError(f"{path}: the soundtrack holds {bad} non-finite samples (NaN or infinity)")


def align_audio(
    samples: np.ndarray, sample_rate: int, audio_start: float, video_start: float, end: float
) -> np.ndarray:
    """(N, C) samples starting at `audio_start` -> (N', C) starting at the first video frame
    (`video_start`; leading audio dropped, a late start padded with zeros), cut at `end` s."""
    shift = int(round((audio_start - video_start) * sample_rate))
    stop = int(round(end * sample_rate))
    if shift > 0:  # padded up to `end` at most (a start far in the future is no allocation)
        pad = np.zeros((min(shift, stop), samples.shape[1]), np.float32)
        samples = np.concatenate([pad, samples[: max(stop - shift, 0)]])
    else:
        samples = samples[-shift:]
    return samples[:stop]


def read_aligned_audio(path: str | Path, video_start: float, end: float) -> tuple[np.ndarray, int] | None:
    """The soundtrack with all its channels on the video clock (see `align_audio`):
    ((N, C) float32, sample rate), or None without an audio stream."""
    decoded = read_audio(path, until=video_start + end)
    if decoded is None:
        return None
    samples, sample_rate, audio_start = decoded
    return align_audio(samples, sample_rate, audio_start, video_start, end), sample_rate


def read_video(
    path: str | Path,
    fps: float = 1.0,
    allow_silent: bool = False,
    frame_memory_mb: float = DEFAULT_FRAME_MEMORY_MB,
    max_duration: float = MAX_DURATION_S,
    keep_stereo: bool = False,
) -> DecodedVideo:
    """Decode a video: frames sampled at `fps` (frame i at i / fps s) and the mono soundtrack.

    keep_stereo: also keep the first two channels as `stereo` (for models that read where the
    sound is; a one-channel soundtrack gives None: it carries no place).

    Frames beyond `frame_memory_mb` of RAM go to a temporary file (`frames` is then a
    read-only np.memmap; the file is deleted when the last reference goes).

    Raises MediaError naming the file when it is missing, unreadable, has no video stream,
    or has no audio stream (unless allow_silent=True: then the audio is silence at 16 kHz
    and a warning is logged), and when the video is longer than `max_duration` seconds (its
    header or its timestamps; checked while decoding, before the frames are sampled).
    """
    path = Path(path)
    if not fps > 0:
        raise MediaError(f"{path}: sampling fps must be positive, got {fps}")
    store = _FrameStore(frame_memory_mb * 2**20)
    frames, times, duration, native_fps, t0 = _sample_frames(path, fps, store, max_duration)
    num_frames = len(frames)
    audio_end = (num_frames - 1) / fps + AUDIO_WINDOW_S
    decoded = read_audio(path, until=t0 + max(audio_end, duration))
    stereo = None
    if decoded is None:
        if not allow_silent:
            raise MediaError(
                f"{path}: no audio stream; audio-visual segmentation needs the soundtrack "
                "(pass allow_silent=True / --allow-silent to run on silence)"
            )
        _LOG.warning("%s: no audio stream, using %.1f s of silence instead", path, audio_end)
        audio = np.zeros(int(round(audio_end * SILENT_SAMPLE_RATE)), dtype=np.float32)
        sample_rate, has_audio = SILENT_SAMPLE_RATE, False
    else:
        samples, sample_rate, audio_start = decoded
        if audio_start - t0 >= duration:
            _LOG.warning(
                "%s: the soundtrack starts at %.2f s, after the video ends (%.2f s): the model "
                "hears silence", path, audio_start - t0, duration,
            )  # fmt: skip
        aligned = align_audio(samples, sample_rate, audio_start, t0, audio_end)  # (N, C)
        audio = aligned.mean(axis=1, dtype=np.float64).astype(np.float32)  # (N,) mono
        if keep_stereo and aligned.shape[1] >= 2:
            stereo = np.ascontiguousarray(aligned[:, :2], dtype=np.float32)  # front left, right
        has_audio = True
        # the sound the sampled frames need ends at audio_end (before the video's end when the
        # sampling rate is below one frame per second): only a soundtrack that stops before
        # that leaves a frame without sound
        needed = min(duration, audio_end)
        if audio.shape[0] < (needed - TRUNCATION_TOLERANCE_S) * sample_rate:
            _LOG.warning(
                "%s: the audio (%.2f s) ends before the video (%.2f s): the rest is heard as silence",
                path, audio.shape[0] / sample_rate, duration,
            )  # fmt: skip
        elif audio.shape[0] < needed * sample_rate - 1:
            _LOG.info(
                "%s: audio (%.2f s) is shorter than the video (%.2f s)",
                path, audio.shape[0] / sample_rate, duration,
            )  # fmt: skip
    return DecodedVideo(
        path=path,
        frames=frames.array(),
        timestamps=np.arange(num_frames, dtype=np.float64) / fps,
        frame_times=np.asarray(times, dtype=np.float64),
        fps=float(fps),
        audio=audio,
        sample_rate=int(sample_rate),
        duration=float(duration),
        has_audio=has_audio,
        native_fps=native_fps,
        start_time=t0,
        stereo=stereo,
    )


def frame_spatial_features(video: DecodedVideo) -> np.ndarray:
    """(T, B*P) flattened maps of where each sampled frame's sound is (avis.audio.spatial),
    from its 1-second window [t_i, t_i + 1 s); a soundtrack without a kept second channel
    (`read_video(keep_stereo=True)`) is heard at the centre."""
    from avis.audio.spatial import window_maps

    sound = video.stereo if video.stereo is not None else video.audio
    return window_maps(sound, video.sample_rate, video.timestamps).reshape(video.num_frames, -1)


def frame_audio_features(video: DecodedVideo, extractor: AudioFeatureExtractor) -> np.ndarray:
    """One (D,) feature per sampled frame: (T, D) float32.

    Frame i gets the feature of the 1-second window [t_i, t_i + 1 s) with t_i = i / fps; at
    fps = 1 this is exactly AVIS's per-second slicing (one extractor call for the whole
    soundtrack). At other rates windows overlap (fps > 1) or leave gaps (fps < 1). A window
    with less than 0.975 s of audio gives the extractor's too-short value (zeros for the patch).
    """
    rate = video.sample_rate
    if abs(video.fps - 1.0) < 1e-9:
        return extractor(video.audio, rate, video.num_frames)
    window = int(round(AUDIO_WINDOW_S * rate))
    rows = []
    for time in video.timestamps:
        start = int(round(time * rate))
        rows.append(extractor(video.audio[start : start + window], rate, 1)[0])
    return np.stack(rows).astype(np.float32)
