"""avis.io.video: frame sampling, audio decoding/alignment and per-frame features on small
videos made here with PyAV (plus one real file)."""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avis.audio.features import WeightFreeExtractor, weight_free_features
from avis.errors import MediaError
from avis.io.video import frame_audio_features, read_video
from shared_data import MEDIA

BBB = MEDIA / "bigbuckbunny.mp4"
GRAY_STEP = 8  # frame k is a uniform picture of gray level GRAY_STEP * k (mod 256)
GRAY_TOLERANCE = 3  # lossy codecs keep a flat picture within a few levels


def make_video(
    path: Path,
    seconds: float,
    rate: Fraction | int = 25,
    size: tuple[int, int] = (32, 24),  # (W, H)
    codec: str = "libx264",
    audio: np.ndarray | None = None,  # (N, C) float32
    sample_rate: int = 16000,
    audio_codec: str = "aac",
    audio_start: float = 0.0,
) -> Path:
    """A video whose frame k is flat gray GRAY_STEP * k, with an optional soundtrack."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        astream = None
        if audio is not None:
            layout = "mono" if audio.shape[1] == 1 else "stereo"
            astream = container.add_stream(audio_codec, rate=sample_rate, layout=layout)
        num_frames = int(round(seconds * float(rate)))
        for k in range(num_frames):
            pixels = np.full((height, width, 3), (GRAY_STEP * k) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if astream is not None:
            fmt = "fltp" if audio_codec == "aac" else "s16"
            resampler = av.AudioResampler(
                format=fmt, layout=layout, rate=sample_rate, frame_size=1024
            )
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.T, dtype=np.float32), format="fltp", layout=layout
            )
            frame.sample_rate = sample_rate
            frame.pts = 0
            offset = int(round(audio_start * sample_rate))
            for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
                chunk.pts += offset
                container.mux(astream.encode(chunk))
            container.mux(astream.encode(None))
    return path


def _tone(seconds: float, rate: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _gray_index(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / GRAY_STEP))


def test_h264_aac_stereo_frames_and_audio(tmp_path: Path) -> None:
    left = _tone(3.0, 44100)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = make_video(tmp_path / "a.mp4", 3.0, rate=25, audio=stereo, sample_rate=44100)
    video = read_video(path)
    assert video.frames.shape == (3, 24, 32, 3) and video.frames.dtype == np.uint8
    np.testing.assert_array_equal(video.timestamps, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(video.frame_times, [0.0, 1.0, 2.0], atol=1e-6)
    assert [_gray_index(f) for f in video.frames] == [0, 25, 50 % 32]
    assert video.duration == pytest.approx(3.0) and video.native_fps == pytest.approx(25.0)
    assert video.has_audio and video.sample_rate == 44100
    assert video.audio.dtype == np.float32 and video.audio.ndim == 1
    assert abs(video.audio_duration - 3.0) < 0.05
    # mono = (L + R) / 2: a 0.5-amplitude tone on the left only -> RMS 0.25 / sqrt(2)
    rms = float(np.sqrt(np.mean(video.audio[4410:-4410] ** 2)))
    assert rms == pytest.approx(0.25 / np.sqrt(2), rel=0.05)


def test_odd_size_odd_rate_mono_pcm(tmp_path: Path) -> None:
    path = make_video(
        tmp_path / "odd.mkv", 2.5, rate=7, size=(33, 17), codec="ffv1",
        audio=_tone(2.5, 22050)[:, None], sample_rate=22050, audio_codec="pcm_s16le",
    )  # fmt: skip
    video = read_video(path)
    assert video.frames.shape == (3, 17, 33, 3)  # t = 0, 1, 2 < 2.5 s
    assert [_gray_index(f) for f in video.frames] == [0, 7, 14]
    np.testing.assert_allclose(video.frame_times, [0, 1, 2], atol=1e-6)
    assert video.sample_rate == 22050
    assert video.audio.shape[0] == int(2.5 * 22050)  # shorter than the 3-s window: kept as is


def test_ntsc_rate_and_fps_2(tmp_path: Path) -> None:
    ntsc = Fraction(30000, 1001)
    path = make_video(
        tmp_path / "ntsc.mp4", 1.93, rate=ntsc, audio=np.zeros((32000, 1), np.float32)
    )
    video = read_video(path, fps=2.0)
    assert video.duration == pytest.approx(58 / float(ntsc))  # 58 frames: 1.935 s
    assert video.num_frames == 4
    np.testing.assert_array_equal(video.timestamps, [0.0, 0.5, 1.0, 1.5])
    frame_period = 1001 / 30000
    # the frame shown at t is the last one starting at or before t
    expected = [np.floor(t / frame_period + 1e-9) * frame_period for t in video.timestamps]
    np.testing.assert_allclose(video.frame_times, expected, atol=1e-4)
    assert np.all(video.frame_times <= video.timestamps + 1e-9)


def test_no_audio_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_video(tmp_path / "silent_film.mp4", 2.0)
    with pytest.raises(MediaError, match="silent_film.mp4.*no audio"):
        read_video(path)
    with caplog.at_level(logging.WARNING):
        video = read_video(path, allow_silent=True)
    assert "no audio stream" in caplog.text
    assert not video.has_audio and video.num_frames == 2
    assert video.audio.shape == (2 * video.sample_rate,) and not video.audio.any()


def test_audio_shorter_and_longer_than_video(tmp_path: Path) -> None:
    short = make_video(tmp_path / "short.mp4", 4.0, audio=_tone(1.5, 16000)[:, None])
    video = read_video(short)
    assert video.num_frames == 4 and abs(video.audio_duration - 1.5) < 0.05
    feats = frame_audio_features(video, WeightFreeExtractor())
    assert feats.shape == (4, 128) and feats[0].any() and not feats[1:].any()
    long = make_video(tmp_path / "long.mp4", 2.0, audio=_tone(5.0, 16000)[:, None])
    video = read_video(long)
    assert video.num_frames == 2 and video.audio.shape[0] == 2 * 16000  # trimmed to T seconds


def test_a_short_soundtrack_is_warned_only_where_sampled_frames_need_it(tmp_path: Path, caplog) -> None:
    """At fps 0.25 a 4-s video gives one frame, which needs its first second of sound only:
    the sound kept is 1 s long, and that is no soundtrack ending before the video."""
    full = make_video(tmp_path / "full.mp4", 4.0, audio=_tone(4.0, 16000)[:, None])
    short = make_video(tmp_path / "short.mp4", 4.0, audio=_tone(1.5, 16000)[:, None])
    with caplog.at_level(logging.WARNING, logger="avis.io.video"):
        video = read_video(full, fps=0.25)
    assert video.num_frames == 1 and video.audio.shape[0] == 16000
    assert "ends before the video" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="avis.io.video"):
        read_video(short)  # 4 frames need 4 s of sound
    assert "the audio (1.5" in caplog.text and "ends before the video (4.00 s)" in caplog.text


def test_audio_alignment_and_late_start(tmp_path: Path) -> None:
    rate = 16000
    burst = np.concatenate([np.zeros(rate), _tone(1.0, rate)])[:, None]  # onset at 1.0 s
    path = make_video(
        tmp_path / "onset.mkv", 2.0, audio=burst, sample_rate=rate, audio_codec="pcm_s16le"
    )
    video = read_video(path)
    onset = int(np.argmax(np.abs(video.audio) > 0.01))
    assert abs(onset - rate) <= 2
    late = make_video(
        tmp_path / "late.mkv", 2.0, audio=_tone(1.5, rate)[:, None], sample_rate=rate,
        audio_codec="pcm_s16le", audio_start=0.5,
    )  # fmt: skip
    video = read_video(late)
    onset = int(np.argmax(np.abs(video.audio) > 0.01))
    assert abs(onset - rate // 2) <= 2 and not video.audio[: rate // 2 - 2].any()


def test_features_per_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, size=(3 * 16000, 1)).astype(np.float32)
    path = make_video(tmp_path / "n.mkv", 3.0, codec="ffv1", audio=noise, audio_codec="pcm_s16le")
    video = read_video(path)
    feats = frame_audio_features(video, WeightFreeExtractor())
    np.testing.assert_array_equal(feats, weight_free_features(video.audio, 16000, 3))
    video2 = read_video(path, fps=2.0)
    feats2 = frame_audio_features(video2, WeightFreeExtractor())
    assert feats2.shape == (6, 128)
    np.testing.assert_allclose(feats2[::2][:3], feats, atol=1e-6)  # windows at whole seconds
    np.testing.assert_array_equal(
        feats2[1], weight_free_features(video2.audio[8000:24000], 16000, 1)[0]
    )


def test_unreadable_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(MediaError, match="junk.mp4"):
        read_video(junk)
    with pytest.raises(MediaError, match="missing.mp4.*not found"):
        read_video(tmp_path / "missing.mp4")
    wav_only = tmp_path / "sound.wav"
    with av.open(str(wav_only), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(MediaError, match="sound.wav.*no video stream"):
        read_video(wav_only)
    with pytest.raises(MediaError, match="fps"):
        read_video(junk, fps=0)


@pytest.mark.skipif(not BBB.is_file(), reason="no bigbuckbunny.mp4")
def test_big_buck_bunny() -> None:
    """5.28 s of 25-fps video (132 frames, last at 5.24 s) -> frames at t = 0..5 -> 6 frames."""
    video = read_video(BBB)
    assert video.frames.shape == (6, 720, 1280, 3)
    assert video.duration == pytest.approx(5.28)
    assert video.sample_rate == 48000 and video.has_audio
    assert 5.2 < video.audio_duration < 5.4  # AAC track of 5.312 s, shorter than 6 windows
    feats = frame_audio_features(video, WeightFreeExtractor())
    assert feats.shape == (6, 128) and feats[:5].all(axis=1).any()
    assert not feats[5].any()  # the last second has only ~0.31 s of audio -> zeros


def test_frames_past_the_memory_budget_go_to_a_temporary_file(tmp_path: Path) -> None:
    path = make_video(tmp_path / "long.mp4", 5.0, rate=10, audio=_tone(5.0, 16000)[:, None])
    in_memory = read_video(path)
    # one 24 x 32 frame is 2304 bytes: the budget holds two frames, the rest spills
    spilled = read_video(path, frame_memory_mb=2.5 * 2304 / 2**20)
    assert not isinstance(in_memory.frames, np.memmap)
    assert isinstance(spilled.frames, np.memmap) and spilled.frames.shape == (5, 24, 32, 3)
    np.testing.assert_array_equal(spilled.frames, in_memory.frames)
    np.testing.assert_array_equal(spilled.audio, in_memory.audio)


def _faststart_copy(src: Path, dst: Path) -> None:
    """Remux `src` with the index (moov) first, as web-ready files are."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def test_truncated_file_warns_with_decoded_and_promised_seconds(tmp_path, caplog) -> None:
    """Issue 18: the first half of a faststart mp4 decoded without a word."""
    from avis.data.synth.media import write_mp4

    frames = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(10)]
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * 16000) / 16000)
    write_mp4(tmp_path / "full.mp4", frames, 1, tone, 16000)
    _faststart_copy(tmp_path / "full.mp4", tmp_path / "fast.mp4")
    with caplog.at_level("WARNING"):
        read_video(tmp_path / "fast.mp4")
    assert "truncated" not in caplog.text  # the intact file: no warning
    data = (tmp_path / "fast.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        video = read_video(tmp_path / "half.mp4")
    assert video.duration < 10
    assert re.search(r"half\.mp4: decoded \d+\.\d\d s of (video|audio), but the file header promises 10\.00 s", caplog.text)


def test_float_wav_with_nan_is_an_error(tmp_path) -> None:
    import struct

    from avis.io.audio_file import load_audio

    samples = np.zeros(16000, np.float32)
    samples[100] = np.nan
    data = samples.tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 3, 1, 16000, 16000 * 4, 4, 32
    ) + b"data" + struct.pack("<I", len(data))
    (tmp_path / "nan.wav").write_bytes(header + data)
    with pytest.raises(MediaError, match="nan.wav: the soundtrack holds 1 non-finite samples"):
        load_audio(tmp_path / "nan.wav")


# ---------------------------------------------------------------- hostile files (third barrage)


def _ffv1_with_times(
    path: Path, pts: list[int], audio_seconds: float = 0.0, audio_start: int = 0, fmt: str | None = None
) -> Path:
    """32 x 32 ffv1 frames at the given presentation times (seconds), with an optional silent
    8 kHz pcm soundtrack of `audio_seconds` starting at `audio_start` s."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("ffv1" if fmt is None else "mpeg4", rate=1)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv444p" if fmt is None else "yuv420p"
        astream = container.add_stream("pcm_s16le", rate=8000, layout="mono") if audio_seconds else None
        for k, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if astream is not None:
            for start in range(0, int(audio_seconds * 8000), 4000):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
                frame.sample_rate, frame.pts = 8000, audio_start * 8000 + start
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


def test_a_timestamp_jump_is_refused_before_its_frames_are_copied(tmp_path: Path) -> None:
    """A frame at 10^7 s (4 frames of data) made avis sample 10^7 copies of the frame before
    it: the temporary frame file filled the disk. Now the video's length is bounded (24 h;
    `avis serve` passes its --max-duration), from the header and from each frame's time."""
    from avis.io.stream import stream_frames
    from avis.io.video import MAX_DURATION_S

    assert MAX_DURATION_S == 24 * 3600
    mkv = _ffv1_with_times(tmp_path / "jump.mkv", [0, 1, 2, 10**7])
    with pytest.raises(MediaError, match=r"jump\.mkv: the video is at least 10000001 s long \(its header says\), over the 86400 s"):
        read_video(mkv, allow_silent=True)
    ts = _ffv1_with_times(tmp_path / "jump.ts", [0, 1, 2, 200], fmt="mpegts")  # its header says 3 s
    assert read_video(ts, allow_silent=True, max_duration=300).num_frames == 201
    with pytest.raises(MediaError, match=r"jump\.ts: the video is at least 200 s long \(a frame's timestamp\), over the 100 s"):
        read_video(ts, allow_silent=True, max_duration=100)
    # online (a live source has no length): a frame may stay on screen at most an hour
    with pytest.raises(MediaError, match=r"jump\.mkv: the video timestamps jump by 9999998 s \(from 2\.00 s to 10000000\.00 s\)"):
        list(stream_frames(mkv, allow_silent=True))


def test_a_cover_picture_is_no_video(tmp_path: Path) -> None:
    """An mp3 with cover art was predicted as a one-frame video of 0 s (with a warning that
    the file was truncated); the attached picture is now skipped like any non-video."""
    import io

    from PIL import Image

    from avis.io.stream import stream_frames

    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(jpeg, "JPEG")
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w") as container:
        astream = container.add_stream("mp3", rate=16000, layout="mono")
        cover = container.add_stream("mjpeg")
        cover.width = cover.height = 32
        cover.pix_fmt = "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        packet = av.Packet(jpeg.getvalue())
        packet.stream, packet.pts, packet.dts = cover, 0, 0
        container.mux(packet)
        fmt = astream.codec_context.format.name
        for start in range(0, 16000 * 2, 1152):
            dtype = {"s16": np.int16, "s32": np.int32}.get(fmt.rstrip("p"), np.float32)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), dtype), format=fmt, layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    message = r"song\.mp3: no video stream, only a still cover picture \(attached picture\)"
    with pytest.raises(MediaError, match=message):
        read_video(path)
    with pytest.raises(MediaError, match=message):
        list(stream_frames(path))


def test_audio_past_the_video_is_neither_decoded_nor_padded(tmp_path: Path, caplog) -> None:
    """A 2-s video with 10 minutes of (compressible) audio held all of it in memory, and an
    audio start 10^5 s after the video allocated 10^5 s of zeros (MemoryError): the soundtrack
    is now decoded and padded up to the end of the last frame's audio window only."""
    from avis.io.stream import stream_frames
    from avis.io.video import read_aligned_audio, read_audio

    long_audio = _ffv1_with_times(tmp_path / "long_audio.mkv", [0, 1], audio_seconds=600)
    samples, rate, _ = read_audio(long_audio, until=2.0)
    assert rate == 8000 and samples.shape[0] <= 3 * 8000  # stops at the first chunk after 2 s
    assert read_audio(long_audio)[0].shape[0] == 600 * 8000  # without `until`: all of it
    with caplog.at_level("WARNING"):
        video = read_video(long_audio)
    assert video.audio.shape == (2 * 8000,) and "truncated" not in caplog.text  # Matroska's per-track DURATION
    late = _ffv1_with_times(tmp_path / "late.mkv", [0, 1], audio_seconds=1, audio_start=10**5)
    with caplog.at_level("WARNING"):
        video = read_video(late)
    assert video.audio.shape == (2 * 8000,) and not video.audio.any()
    assert "late.mkv: the soundtrack starts at 100000.00 s, after the video ends (2.00 s)" in caplog.text
    sound, _ = read_aligned_audio(late, 0.0, 2.0)
    assert sound.shape == (2 * 8000, 1)
    with pytest.raises(MediaError, match=r"late\.mkv: the soundtrack starts 100000 s after the first video frame"):
        list(stream_frames(late))
