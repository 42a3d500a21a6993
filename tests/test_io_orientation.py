"""Frames are read upright (display rotation) and of one size (a size change midway).

A phone's portrait video is stored sideways with a display matrix in the container (the MP4
track header, `tkhd`); players turn it upright, and so must avis, or every mask and overlay
would be sideways. The test files are written with PyAV and their track matrix patched, which
is where a phone puts it.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from avis.io.stream import FrameStream
from avis.io.video import quarter_turns, read_video

W, H = 48, 32  # stored size
FPS = 5
ONE = 0x10000  # 16.16 fixed point
# tkhd matrices (a, b, u, c, d, v, x, y, w) and the display rotation ffmpeg reads from them
MATRICES = {
    0: (ONE, 0, 0, 0, ONE, 0, 0, 0, 0x40000000),
    -90: (0, ONE, 0, -ONE, 0, 0, 0, 0, 0x40000000),  # the portrait phone video
    90: (0, -ONE, 0, ONE, 0, 0, 0, 0, 0x40000000),
    180: (-ONE, 0, 0, 0, -ONE, 0, 0, 0, 0x40000000),
}


def marked_frames(num: int) -> list[np.ndarray]:
    """(H, W, 3) frames, black with a white top-left quarter (where 'up' and 'left' are)."""
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[: H // 2, : W // 2] = 255
    return [pixels] * num


def write_mp4(path: Path, frames: list[np.ndarray], rotation: int, audio: bool = True) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        astream = container.add_stream("aac", rate=16000, layout="mono") if audio else None
        for k, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if astream is not None:
            samples = np.zeros((1, 16000 * len(frames) // FPS), np.float32)
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, 0
            container.mux(astream.encode(chunk))
            container.mux(astream.encode(None))
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")  # the video track's header (the first track written)
    assert box > 0 and data[box + 4] == 0, "expected a version-0 tkhd box"
    matrix = box + 4 + 40  # after version/flags, times, track id, duration, layer, volume
    data[matrix : matrix + 36] = struct.pack(">9i", *MATRICES[rotation])
    path.write_bytes(data)
    return path


def quadrant(frame: np.ndarray) -> str:
    """Which quarter of the frame is white: 'top-left', 'top-right', ..."""
    h, w = frame.shape[:2]
    means = {
        "top-left": frame[: h // 2, : w // 2].mean(),
        "top-right": frame[: h // 2, w // 2 :].mean(),
        "bottom-left": frame[h // 2 :, : w // 2].mean(),
        "bottom-right": frame[h // 2 :, w // 2 :].mean(),
    }
    return max(means, key=lambda k: means[k])


# rotation -> (displayed shape, where the stored top-left quarter is shown)
EXPECTED = {
    0: ((H, W), "top-left"),
    -90: ((W, H), "top-right"),  # turned 90 degrees clockwise
    90: ((W, H), "bottom-left"),  # turned 90 degrees counter-clockwise
    180: ((H, W), "bottom-right"),
}


@pytest.mark.parametrize("rotation", sorted(EXPECTED))
def test_frames_are_read_upright(tmp_path: Path, rotation: int) -> None:
    path = write_mp4(tmp_path / f"rot{rotation}.mp4", marked_frames(10), rotation)
    with av.open(str(path)) as container:  # the file says what the test means
        assert next(container.decode(video=0)).rotation % 360 == rotation % 360
    shape, corner = EXPECTED[rotation]
    video = read_video(path, fps=FPS)
    assert video.frames.shape == (10, *shape, 3)
    assert all(quadrant(f) == corner for f in video.frames)
    online = [item.frame for item in FrameStream(path, fps=FPS)]  # the online reader agrees
    assert len(online) == 10
    assert all(f.shape == (*shape, 3) and quadrant(f) == corner for f in online)


def test_quarter_turns() -> None:
    assert [quarter_turns(r) for r in (0, -90, 90, 180, -180, 270, 89.4, -45.5)] == [0, 3, 1, 2, 2, 3, 1, 3]
    assert quarter_turns(float("nan")) == 0


def test_a_frame_size_change_midway_is_scaled_to_the_first_size(tmp_path: Path, caplog) -> None:
    """Two h264 segments of different sizes spliced in one MPEG-TS stream (as `cat a.ts b.ts`
    gives): every sampled frame has the first size, and a warning says so."""
    parts = []
    for index, (w, h, level) in enumerate([(W, H, 40), (W * 2, H * 2, 200)]):
        part = tmp_path / f"part{index}.ts"
        with av.open(str(part), mode="w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for k in range(5):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), level, np.uint8), format="rgb24")
                frame.pts = k + 5 * index  # the second part continues the clock
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        parts.append(part.read_bytes())
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(b"".join(parts))
    with caplog.at_level(logging.WARNING):
        video = read_video(spliced, fps=FPS, allow_silent=True)
    assert video.frames.shape[1:] == (H, W, 3)
    levels = video.frames.reshape(len(video.frames), -1).mean(1)
    assert levels[0] < 60 and levels[-1] > 180  # both parts are there
    assert "frame size changes" in caplog.text
    online = [item.frame for item in FrameStream(spliced, fps=FPS, allow_silent=True)]
    assert len(online) == len(video.frames) and all(f.shape == (H, W, 3) for f in online)
