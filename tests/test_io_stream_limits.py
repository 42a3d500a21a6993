"""The online reader holds a bounded amount of sound: a short video with a long soundtrack."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from avis.io import stream as stream_module
from avis.io.stream import stream_frames
from avis.io.video import read_video
from test_io_video import _tone, make_video

RATE = 16000
RATE_44K = 44100  # not the 16 kHz avis assumes before any sound is decoded


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_sound_far_past_the_video_is_neither_held_nor_decoded(tmp_path: Path, monkeypatch, caplog, container) -> None:
    """A 3-s video with 60 s of sound, and at most 5 s of sound held ahead of the video: the
    frames get the same sound as offline, the reader stops decoding the soundtrack, and says so."""
    path = make_video(tmp_path / f"long_sound.{container}", 3.0, audio=_tone(60.0, RATE)[:, None], sample_rate=RATE)
    monkeypatch.setattr(stream_module, "MAX_AUDIO_AHEAD_S", 5.0)
    held = []
    real_append = stream_module._AudioBuffer.append

    def spy(buffer, samples):
        real_append(buffer, samples)
        held.append(buffer.size)

    monkeypatch.setattr(stream_module._AudioBuffer, "append", spy)
    frames = stream_frames(path)
    with caplog.at_level(logging.WARNING, logger="avis.io.stream"):
        items = list(frames)
    offline = read_video(path)
    assert len(items) == offline.num_frames == 3
    for item in items:
        start = int(round(item.time * RATE))
        np.testing.assert_allclose(item.audio, offline.audio[start : start + RATE], atol=1e-6)
    assert max(held) <= (3.0 + 5.0) * RATE  # the last frame's time + the allowance
    assert frames.sampler.audio_decoded < 20 * RATE  # decoding stopped, not 60 s
    assert "runs more than 5 s ahead of the video" in caplog.text


def test_an_ordinary_file_is_not_cut(tmp_path: Path, caplog) -> None:
    """Sound that ends with the video is all kept, without a warning, at the default limit."""
    path = make_video(tmp_path / "ordinary.mp4", 4.0, audio=_tone(4.0, RATE)[:, None], sample_rate=RATE)
    with caplog.at_level(logging.WARNING, logger="avis.io.stream"):
        items = list(stream_frames(path))
    assert len(items) == 4 and all(item.audio.shape[0] == RATE for item in items)
    assert "ahead of the video" not in caplog.text


def test_frames_waiting_for_a_late_soundtrack_are_bounded(tmp_path: Path, monkeypatch, caplog) -> None:
    """A 12-s video whose sound starts at 8 s, and room for 3 waiting frames: the frames before
    the sound are passed on with silence (as offline, which pads the late start with zeros)
    instead of all waiting, and every frame's sound equals the offline one."""
    path = make_video(tmp_path / "late.mp4", 12.0, audio=_tone(4.0, RATE_44K)[:, None], sample_rate=RATE_44K, audio_start=8.0)
    offline = read_video(path)
    monkeypatch.setattr(stream_module, "MAX_WAITING_BYTES", 3 * offline.frames[0].nbytes)
    waiting = []
    real_ready = stream_module._Sampler.ready

    def spy(sampler, video_ended):
        waiting.append(len(sampler.pending))
        yield from real_ready(sampler, video_ended)

    monkeypatch.setattr(stream_module._Sampler, "ready", spy)
    with caplog.at_level(logging.WARNING, logger="avis.io.stream"):
        items = list(stream_frames(path))
    assert len(items) == offline.num_frames == 12
    for item in items:
        start = int(round(item.time * RATE_44K))
        expected = offline.audio[start : start + RATE_44K]
        got = np.zeros_like(expected)
        got[: item.audio.shape[0]] = item.audio  # a frame passed on early has no samples
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert max(waiting) <= 4  # the cap (3), plus the frame sampled before the check
    assert {item.sample_rate for item in items} == {RATE_44K}  # the early ones too (header rate)
    assert "frames wait for their sound" in caplog.text
