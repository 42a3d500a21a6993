"""Read a live source frame by frame: any file, pipe or stream URL PyAV opens.

`stream_frames(source, fps)` yields each sampled frame with its second of audio as soon as
both have arrived, with the sampling conventions of `avis.io.video.read_video` (frame i is
the picture on screen at i / fps after the first video frame; its audio window is the
samples [round(i / fps x rate), + round(1 s x rate)) of the mono soundtrack aligned to the
first video frame), so the frames and audio windows equal the offline ones. With
`keep_stereo` each frame also carries the window's first two channels (left, right), as
`read_video(keep_stereo=True)` keeps them, for models that read where the sound is. Memory is
bounded: the frames waiting for their audio and the audio not yet consumed.

Sources: a path (a regular file or a named pipe), "-" (standard input) or a URL
("rtsp://", "http://", "udp://", ... anything FFmpeg's protocols open). A pipe needs a
streamable container (Matroska/WebM, MPEG-TS, FLV, fragmented MP4), not a plain MP4, whose
index sits at the end of the file.

Limits: a live source has no duration, so instead of `read_video`'s `max_duration` the video
timestamps may jump by at most `MAX_GAP_S` (one hour) between two frames (also the last
frame's own duration), and the soundtrack may start at most that long after the first video
frame: broken timestamps of a hostile file would otherwise make millions of copies of one
frame or of silence. The audio held (decoded, not yet consumed by a frame) is at most
`MAX_AUDIO_AHEAD_S` (10 minutes; with `keep_stereo` three columns, so three times the bytes:
about 350 MB at 48 kHz): a short video with hours of sound after its end (whose end
is known only at the end of the file) would otherwise be held whole; past that the sound is
neither kept nor decoded, with a warning (a frame that comes later hears silence). Likewise
the sampled frames waiting for their sound are at most `MAX_WAITING_BYTES` (1 GiB): past that
the oldest are passed on with the sound there is, with a warning (a soundtrack that starts late
gives them silence, as `read_video` does; a file that is not interleaved loses sound).

Letters: H x W frame size, n audio samples.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avis.errors import MediaError
from avis.io.outputs import STDIN, is_url
from avis.io.video import (
    _TIME_EPS,
    AUDIO_WINDOW_S,
    MAX_GAP_S,
    SILENT_SAMPLE_RATE,
    TRUNCATION_TOLERANCE_S,
    UprightFrames,
    _frame_duration,
    _warn_if_truncated,
    promised_duration,
    video_stream,
)

_LOG = logging.getLogger(__name__)
MAX_AUDIO_AHEAD_S = 600.0  # most seconds of sound kept past the latest video frame
MAX_WAITING_BYTES = float(2**30)  # most bytes of sampled frames held waiting for their sound
MAX_GAPS = 256  # recent frame gaps kept to estimate the last frame's duration


@dataclass
class StreamFrame:
    index: int  # sampled frame number
    time: float  # index / fps, seconds from the first video frame
    frame: np.ndarray  # (H, W, 3) uint8 RGB
    audio: np.ndarray  # (n,) float32 mono: the frame's 1-second window (shorter at the end)
    sample_rate: int
    has_audio: bool  # False: silence stands in for a missing audio stream
    # (n, 2) float32 (left, right) of the same window, with keep_stereo (a mono source: twice)
    stereo: np.ndarray | None = None


PIPE_HINT = "; a pipe needs a streamable container (mkv, webm, ts, flv, fragmented mp4), not a plain mp4"


def _is_pipe(source: str) -> bool:
    if source == STDIN:
        return True
    try:
        return not is_url(source) and Path(source).is_fifo()
    except OSError:
        return False


def open_source(source: str | Path) -> av.container.InputContainer:
    """A PyAV container for a path, a named pipe, "-" (stdin) or a URL."""
    text = str(source)
    try:
        if text == STDIN:
            return av.open(sys.stdin.buffer, mode="r")
        if not is_url(text) and not Path(text).exists():
            raise MediaError(f"{text}: file not found")
        return av.open(text, mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as err:
        if isinstance(err, MediaError):
            raise
        hint = PIPE_HINT if _is_pipe(text) else ""
        raise MediaError(f"{text}: cannot be opened as a media stream ({err}){hint}") from err


class _AudioBuffer:
    """float32 samples aligned to the first video frame, with the consumed ones dropped: rows
    (n, k) of k columns, the mono mix (then left and right with keep_stereo)."""

    def __init__(self, columns: int = 1) -> None:
        self.columns = columns
        self.start = 0  # stream index of chunks[0][0]
        self.chunks: deque[np.ndarray] = deque()
        self.size = 0  # samples held
        self.ended = False

    @property
    def end(self) -> int:  # stream index one past the last sample held
        return self.start + self.size

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self.chunks.append(samples)
            self.size += samples.shape[0]

    def window(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) that exist (fewer at the end of the audio)."""
        stop = min(stop, self.end)
        if stop <= start or not self.chunks:
            return np.zeros((0, self.columns), np.float32)
        joined = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks = deque([joined])
        return joined[max(start - self.start, 0) : stop - self.start].copy()

    def drop_before(self, index: int) -> None:
        cut = min(max(index - self.start, 0), self.size)
        if not cut:
            return
        joined = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks = deque([joined[cut:]]) if cut < joined.shape[0] else deque()
        self.start += cut
        self.size -= cut


class _Sampler:
    """Turns decoded frames and audio into StreamFrames (read_video's sampling, online)."""

    def __init__(self, fps: float, realtime: bool, source: str, keep_stereo: bool = False) -> None:
        self.fps, self.realtime, self.source = fps, realtime, source
        self.keep_stereo = keep_stereo
        self.index = 0
        self.t0: float | None = None
        self.prev: av.VideoFrame | None = None
        self.prev_time = 0.0
        self.prev_rgb: np.ndarray | None = None
        self.upright = UprightFrames(source)  # frames turned upright, one size
        self.gaps: deque[float] = deque(maxlen=MAX_GAPS)
        self.pending: deque[tuple[int, np.ndarray]] = deque()  # frames waiting for their audio
        self.audio = _AudioBuffer(3 if keep_stereo else 1)
        self.rate: int | None = None
        self.audio_start: float | None = None  # first audio frame time, container clock
        self.early: list[np.ndarray] = []  # audio decoded before the first video frame
        self.resampler: av.AudioResampler | None = None
        self.has_audio = True
        self.wall_start: float | None = None
        self.aligned = False  # the audio offset to the first video frame has been applied
        self.skip = 0  # leading audio samples still to drop (audio that starts before the video)
        self.audio_decoded = 0  # mono samples decoded (before alignment)
        self.early_size = 0  # samples in `early`
        self.audio_full = False  # MAX_AUDIO_AHEAD_S reached: further audio is dropped
        self.warned_waiting = False  # MAX_WAITING_BYTES of frames waited for their sound
        self.header_rate: int | None = None  # the audio stream's rate in its header (until decoded)
        self.duration: float | None = None  # of the video, known at its end

    # -------------------------------------------------------------- video
    def video_frame(self, frame: av.VideoFrame, decoded_index: int, native_fps: float | None) -> None:
        raw = frame.time if frame.time is not None else decoded_index / (native_fps or 1.0)
        if self.t0 is None:
            self.t0 = raw
            for samples in self.early:
                self._add_audio(samples)
            self.early, self.early_size = [], 0
        t = raw - self.t0
        if self.prev is not None:
            self._check_gap(t - self.prev_time, f"from {self.prev_time:.2f} s to {t:.2f} s")
            self.gaps.append(t - self.prev_time)
            while self.index / self.fps < t - _TIME_EPS:
                self._sample_prev()
        self.prev, self.prev_time, self.prev_rgb = frame, t, None

    def _check_gap(self, gap: float, where: str) -> None:
        if gap > MAX_GAP_S:
            raise MediaError(
                f"{self.source}: the video timestamps jump by {gap:.0f} s ({where}), more than "
                f"the {MAX_GAP_S:.0f} s one frame may stay on screen: broken timestamps"
            )

    def _sample_prev(self) -> None:
        assert self.prev is not None
        if self.prev_rgb is None:
            self.prev_rgb = self.upright(self.prev)
        self.pending.append((self.index, self.prev_rgb))
        self.index += 1

    def end_video(self, stream) -> None:
        if self.prev is None:
            raise MediaError(f"{self.source}: the video stream has no decodable frame")
        last = _frame_duration(self.prev, stream, list(self.gaps))
        self._check_gap(last, f"the last frame's duration, from {self.prev_time:.2f} s")
        duration = self.prev_time + last
        self.duration = duration
        while self.index / self.fps < duration - _TIME_EPS or self.index == 0:
            self._sample_prev()

    # -------------------------------------------------------------- audio
    def audio_frame(self, frame: av.AudioFrame) -> None:
        if self.resampler is None:
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
            self.rate = int(frame.sample_rate)
        if self.audio_start is None and frame.time is not None:
            self.audio_start = float(frame.time)
        for out in self.resampler.resample(frame):
            self._add_chunk(out.to_ndarray())

    def end_audio(self) -> None:
        if self.resampler is not None:
            for out in self.resampler.resample(None):
                self._add_chunk(out.to_ndarray())
        self.audio.ended = True

    def _add_chunk(self, chunk: np.ndarray) -> None:  # (C, n) float32
        if not np.isfinite(chunk).all():  # as read_video: NaN features would be silently wrong
            broken = ~np.isfinite(chunk)  # (C, n)
            first = self.audio_decoded + int(broken.any(axis=0).argmax())
            raise MediaError(
                f"{self.source}: the soundtrack holds non-finite samples (NaN or infinity): "
                f"{int(broken.sum())} of the {chunk.size} in the chunk decoded at "
                f"{self.audio_decoded / (self.rate or SILENT_SAMPLE_RATE):.2f} s, the first at "
                f"{first / (self.rate or SILENT_SAMPLE_RATE):.2f} s"
            )
        if self.audio_full:
            return
        mono = chunk.T.astype(np.float32).mean(axis=1, dtype=np.float64).astype(np.float32)
        if self.keep_stereo:  # (n, 3): mono, left, right (a mono source heard at the centre)
            sides = chunk[:2] if chunk.shape[0] >= 2 else chunk[[0, 0]]
            rows = np.column_stack([mono, sides.T.astype(np.float32)])
        else:
            rows = mono[:, None]  # (n, 1)
        self.audio_decoded += rows.shape[0]
        room = self._audio_room()
        if rows.shape[0] > room:
            rows = rows[: max(room, 0)]
            self.audio_full = True
            self.audio.ended = True  # frames stop waiting for sound that is not kept
            _LOG.warning(
                "%s: the soundtrack runs more than %.0f s ahead of the video (sound past the "
                "video's end, or a file whose audio and video are not interleaved): the sound "
                "after %.2f s is not kept", self.source, MAX_AUDIO_AHEAD_S,
                self.audio_decoded / (self.rate or SILENT_SAMPLE_RATE),
            )  # fmt: skip
        if self.t0 is None:
            self.early.append(rows)
            self.early_size += rows.shape[0]
        else:
            self._add_audio(rows)

    def _audio_room(self) -> int:
        """Samples that may still be kept: up to MAX_AUDIO_AHEAD_S past the latest video frame
        (before the first one: that much audio in all)."""
        rate = self.rate or SILENT_SAMPLE_RATE
        ahead = int(MAX_AUDIO_AHEAD_S * rate)
        if self.t0 is None or not self.aligned:
            return ahead - self.early_size
        # the buffer's stream index counts samples from the first video frame
        return int((self.prev_time * rate) + ahead) - self.audio.end + self.skip

    def _add_audio(self, rows: np.ndarray) -> None:
        assert self.t0 is not None and self.rate is not None
        if not self.aligned:
            self.aligned = True
            shift = int(round(((self.audio_start or 0.0) - self.t0) * self.rate))
            if shift > MAX_GAP_S * self.rate:  # not millions of zeros for a broken timestamp
                raise MediaError(
                    f"{self.source}: the soundtrack starts {shift / self.rate:.0f} s after the first "
                    f"video frame, more than {MAX_GAP_S:.0f} s: broken timestamps"
                )
            if shift > 0:  # the audio starts late: silence before it
                self.audio.append(np.zeros((shift, self.audio.columns), np.float32))
            else:  # leading audio before the first video frame is dropped
                self.skip = -shift
        if self.skip:
            cut = min(self.skip, rows.shape[0])
            rows, self.skip = rows[cut:], self.skip - cut
        self.audio.append(rows)

    # -------------------------------------------------------------- output
    def ready(self, video_ended: bool) -> Iterator[StreamFrame]:
        """The pending frames whose audio window is complete (all of them once both ended)."""
        rate = self.rate or self.header_rate or SILENT_SAMPLE_RATE
        window = int(round(AUDIO_WINDOW_S * rate))
        while self.pending:
            index, rgb = self.pending[0]
            start = int(round(index / self.fps * rate))
            if self.audio.end < start + window and not self.audio.ended and self.has_audio:
                if len(self.pending) * rgb.nbytes <= MAX_WAITING_BYTES:
                    return
                self._warn_waiting()  # released with the sound there is (none, usually)
            if not self.has_audio:
                samples = np.zeros((window, self.audio.columns), np.float32)
            else:
                samples = self.audio.window(start, start + window)  # (n, k)
            self.pending.popleft()
            next_start = int(round((index + 1) / self.fps * rate))
            self.audio.drop_before(next_start)
            if self.realtime:
                self._pace(index)
            stereo = np.ascontiguousarray(samples[:, 1:3]) if self.keep_stereo else None
            yield StreamFrame(index, index / self.fps, rgb, np.ascontiguousarray(samples[:, 0]), rate,
                              self.has_audio, stereo)  # fmt: skip

    def _warn_waiting(self) -> None:
        if not self.warned_waiting:
            self.warned_waiting = True
            _LOG.warning(
                "%s: more than %.0f MB of frames wait for their sound (a soundtrack that starts "
                "late, or a file whose audio and video are not interleaved): the oldest are "
                "passed on with the sound there is so far (silence before the soundtrack starts)",
                self.source, MAX_WAITING_BYTES / 2**20,
            )  # fmt: skip

    def _pace(self, index: int) -> None:
        """Wait until frame `index` and its audio second would have arrived live."""
        now = time.perf_counter()
        if self.wall_start is None:
            self.wall_start = now - AUDIO_WINDOW_S  # the first frame is complete 1 s after it starts
        due = self.wall_start + index / self.fps + AUDIO_WINDOW_S
        if due > now:
            time.sleep(due - now)


@dataclass
class StreamInfo:
    """What is known about the source once it is open."""

    native_fps: float | None
    has_audio: bool
    wall_start: float | None = None  # perf_counter time the paced stream started (realtime)
    duration: float | None = None  # seconds of video (last frame time + its duration), at the end
    start_time: float | None = None  # the first video frame's time on the container clock


class FrameStream:
    """Iterate to get StreamFrames; `info` describes the source (see `stream_frames`)."""

    def __init__(
        self, source: str | Path, fps: float = 1.0, *, allow_silent: bool = False, realtime: bool = False,
        keep_stereo: bool = False,
    ) -> None:  # fmt: skip
        if not fps > 0:
            raise MediaError(f"{source}: sampling fps must be positive, got {fps}")
        self.source, self.fps, self.allow_silent = str(source), float(fps), allow_silent
        self.sampler = _Sampler(self.fps, realtime, self.source, keep_stereo)
        self.info = StreamInfo(None, True)

    def __iter__(self) -> Iterator[StreamFrame]:
        container = open_source(self.source)
        with container:
            vstream = video_stream(container, self.source)
            vstream.thread_type = "AUTO"
            astream = container.streams.audio[0] if container.streams.audio else None
            if astream is not None and astream.rate:  # frames passed on before any sound is decoded
                self.sampler.header_rate = int(astream.rate)
            native = float(vstream.average_rate) if vstream.average_rate else None
            self.info.native_fps = native
            sampler = self.sampler
            if astream is None:
                if not self.allow_silent:
                    raise MediaError(
                        f"{self.source}: no audio stream; audio-visual segmentation needs the soundtrack "
                        "(pass --allow-silent to run on silence)"
                    )
                _LOG.warning("%s: no audio stream, using silence instead", self.source)
                sampler.has_audio, self.info.has_audio = False, False
            streams = [vstream] if astream is None else [vstream, astream]
            decoded_video = 0
            try:
                for packet in container.demux(*streams):
                    if sampler.audio_full and astream is not None and packet.stream.index == astream.index:
                        continue  # no more sound is kept: not decoded either
                    for frame in packet.decode():
                        if isinstance(frame, av.VideoFrame):
                            sampler.video_frame(frame, decoded_video, native)
                            decoded_video += 1
                        elif isinstance(frame, av.AudioFrame):
                            sampler.audio_frame(frame)
                    yield from self._ready(sampler)
            except av.error.FFmpegError as err:
                if sampler.prev is None:
                    hint = PIPE_HINT if _is_pipe(self.source) else ""
                    raise MediaError(f"{self.source}: the stream cannot be decoded ({err}){hint}") from err
                _LOG.warning("%s: decoding stopped early at %.2f s (%s)", self.source, sampler.prev_time, err)
            sampler.end_audio()
            sampler.end_video(vstream)
            self.info.duration, self.info.start_time = sampler.duration, sampler.t0
            self._warn_if_short(vstream, astream, container)
            yield from self._ready(sampler)

    def _warn_if_short(self, vstream, astream, container) -> None:
        """`read_video`'s warnings: decoded less than the header promises (a truncated file),
        audio ending well before the video."""
        sampler = self.sampler
        duration = sampler.duration or 0.0
        _warn_if_truncated(Path(self.source), "video", duration, promised_duration(vstream, container))
        if astream is None or sampler.rate is None or sampler.audio_full:
            return
        _warn_if_truncated(Path(self.source), "audio", sampler.audio_decoded / sampler.rate,
                           promised_duration(astream, container))  # fmt: skip
        aligned = sampler.audio.end / sampler.rate
        if aligned < duration - TRUNCATION_TOLERANCE_S:
            _LOG.warning(
                "%s: the audio (%.2f s) ends before the video (%.2f s): the rest is heard as silence",
                self.source, aligned, duration,
            )  # fmt: skip

    def _ready(self, sampler: _Sampler) -> Iterator[StreamFrame]:
        for item in sampler.ready(False):
            self.info.wall_start = sampler.wall_start
            yield item


def stream_frames(
    source: str | Path, fps: float = 1.0, *, allow_silent: bool = False, realtime: bool = False,
    keep_stereo: bool = False,
) -> FrameStream:  # fmt: skip
    """Frames with their audio window, as they arrive (module doc). `realtime` paces the
    output at the media's own speed (a frame is released when it and its second of audio
    would have arrived live), to test whether a consumer keeps up. `keep_stereo`: each frame
    also carries its window's left and right channels (`StreamFrame.stereo`)."""
    return FrameStream(source, fps, allow_silent=allow_silent, realtime=realtime, keep_stereo=keep_stereo)
