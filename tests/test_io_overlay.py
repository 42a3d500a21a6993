"""Overlay writer: drawing rules and a decodable h264 + AAC mp4."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from avis.io.overlay import (
    DEFAULT_PALETTE,
    OverlayInstance,
    _font,
    draw_frame,
    instances_from_arrays,
    write_overlay_video,
)
from avis.io.video import read_video

T, H, W = 3, 48, 64
GRAY = 100


def _scene() -> tuple[np.ndarray, list[OverlayInstance]]:
    frames = np.full((T, H, W, 3), GRAY, dtype=np.uint8)
    masks = np.zeros((2, T, H, W), dtype=bool)
    masks[0, 0:2, 24:44, 4:28] = True  # sounds in frames 0 and 1
    masks[1, 2, 20:44, 36:60] = True  # sounds in frame 2 only
    return frames, instances_from_arrays([0.9, 0.4], [1, 0], masks, track_ids=[5, 8])


def test_draw_frame_only_sounding_instances() -> None:
    frames, instances = _scene()
    font = _font(H)
    drawn = [draw_frame(frames[i], i, instances, ["dog", "piano"], font) for i in range(T)]
    red = np.array(DEFAULT_PALETTE[0])
    inside = drawn[0][40, 15].astype(int)  # inside instance 0, away from its label
    assert np.abs(inside - (0.55 * GRAY + 0.45 * red)).max() <= 1
    assert (drawn[0][30:44, 40:58] == GRAY).all()  # instance 1 silent in frame 0: not drawn
    assert (drawn[2][30:44, 6:26] == GRAY).all()  # instance 0 silent in frame 2
    assert not (drawn[2][35, 45] == GRAY).all()
    # the label sits above the mask, in the instance colour
    assert (drawn[0][:24, 4:28] != GRAY).any()
    assert instances[0].track_id == 5 and instances[1].label == 0


def test_no_instances_leaves_frames_unchanged() -> None:
    frames, _ = _scene()
    out = draw_frame(frames[0], 0, [], ["dog"], _font(H))
    np.testing.assert_array_equal(out, frames[0])


def test_written_video_decodes_with_audio(tmp_path: Path) -> None:
    frames, instances = _scene()
    rate = 16000
    t = np.arange(int(3.5 * rate)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], 1)
    path = write_overlay_video(
        tmp_path / "out" / "overlay.mp4", frames, instances, ["dog", "piano"],
        audio=stereo, sample_rate=rate, fps=1.0, output_fps=5,
    )  # fmt: skip
    with av.open(str(path)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        vstream = container.streams.video[0]
        assert sum(1 for _ in container.decode(vstream)) == T * 5
    video = read_video(path)
    assert video.frames.shape == (T, H, W, 3)
    assert video.duration == pytest.approx(T, abs=1e-3)
    assert abs(video.audio_duration - T) < 0.05  # audio cut to the video's T seconds
    colored = video.frames[:, 40, 15].astype(int)
    assert abs(colored[0, 0] - colored[0, 1]) > 30 and abs(colored[2, 0] - GRAY) < 8


def test_odd_size_no_audio(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, size=(2, 25, 33, 3), dtype=np.uint8)
    path = write_overlay_video(tmp_path / "odd.mp4", frames, [], [], fps=2.0)
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video"]
    video = read_video(path, fps=2.0, allow_silent=True)
    assert video.frames.shape == (2, 26, 34, 3)  # padded to even size for yuv420p


def test_mask_shape_mismatch() -> None:
    frames, _ = _scene()
    bad = OverlayInstance(label=0, score=0.5, masks=np.zeros((T, H, W + 1), bool), track_id=0)
    with pytest.raises(ValueError, match="track 0"):
        write_overlay_video("unused.mp4", frames, [bad], ["dog"])
    with pytest.raises(ValueError, match="sample_rate"):
        write_overlay_video("unused.mp4", frames, [], ["dog"], audio=np.zeros(10))


@pytest.mark.parametrize("channels, kept", [(1, 1), (2, 2), (6, 6), (8, 1)])
def test_overlay_keeps_the_channels_and_ends_at_the_duration(tmp_path: Path, channels: int, kept: int) -> None:
    """Issue 18: the overlay wrote a mono mix of a 5.1 soundtrack and a whole last second."""
    frames, instances = _scene()  # T = 3 frames at 1 fps
    rate = 16000
    audio = np.random.default_rng(0).uniform(-0.2, 0.2, (3 * rate, channels)).astype(np.float32)
    path = write_overlay_video(
        tmp_path / "o.mp4", frames, instances, ["dog", "piano"], audio=audio, sample_rate=rate,
        duration=2.3,
    )  # fmt: skip
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert sound.codec_context.channels == kept
        assert float(video.duration * video.time_base) == pytest.approx(2.3, abs=0.1)
        assert float(sound.duration * sound.time_base) == pytest.approx(2.3, abs=0.07)
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]
