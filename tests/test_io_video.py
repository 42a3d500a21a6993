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
