"""Overlay video writer: frames with coloured instance masks and labels, h264 + AAC mp4.

Each instance is drawn only in the frames where its mask is non-empty (AVISeg: an instance has
a mask only while it sounds): a translucent fill, a solid outline and a label
"<class> #<track id> <score>" in the instance colour. 1-fps video is awkward for players, so
each frame is repeated to `output_fps` (default 10) while the duration stays T / fps seconds,
or the media's own duration when given (the last sampled frame of a 5.3-s clip lasts 0.3 s,
not 1 s); the soundtrack is written as AAC with its channels (mono, stereo, ... 5.1)
and cut to that duration. The file is written atomically (`avis.io.atomic`).

Shape legend: T = frames, H x W = frame size, N = audio samples, C = audio channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

from avis.io.atomic import atomic_path

DEFAULT_OUTPUT_FPS = 10.0
MASK_ALPHA = 0.45
OUTLINE_WIDTH = 2
FONT_FRACTION = 0.035  # label height relative to the frame height
MIN_FONT_PX = 10
LABEL_PAD_PX = 2
TEXT_COLOR = (255, 255, 255)
VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_OPTIONS = {"crf": "23", "preset": "veryfast"}
AUDIO_CODEC = "aac"
AUDIO_FRAME_SIZE = 1024  # AAC frame length
FALLBACK_AUDIO_RATE = 48000  # for rates AAC cannot store
AUDIO_BIT_RATE = 128_000
# channel count -> the layout AAC stores (FFmpeg's default layout of that many channels)
# (PyAV 18 fails on 8-channel 7.1 input frames; 7 or more channels are mixed to mono)
CHANNEL_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1"}
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 56, 56), (44, 153, 168), (255, 178, 29), (72, 249, 10), (146, 204, 23),
    (61, 219, 134), (26, 147, 52), (0, 212, 187), (255, 157, 151), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (132, 56, 255), (203, 56, 255), (255, 55, 199),
)  # fmt: skip


class FrameMasks(Protocol):
    """(T, H, W) bool masks read one frame at a time: an ndarray or a lazy per-frame decoder."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, t: int, /) -> np.ndarray: ...  # frame t's (H, W) bool mask


@dataclass
class OverlayInstance:
    """One predicted track to draw."""

    label: int  # class index into class_names (0-based)
    score: float
    # (T, H, W) bool, empty in frames where the instance is silent: an array or any object
    # with `.shape` whose `masks[t]` gives frame t's (H, W) bool mask (decoded lazily)
    masks: FrameMasks
    track_id: int
    color: tuple[int, int, int] | None = None  # default: DEFAULT_PALETTE[position % 15]


def instances_from_arrays(
    scores: Sequence[float] | np.ndarray,  # (K,)
    labels: Sequence[int] | np.ndarray,  # (K,)
    masks: np.ndarray,  # (K, T, H, W) bool
    track_ids: Sequence[int] | None = None,
) -> list[OverlayInstance]:
    """OverlayInstances from the prediction arrays; track ids default to 0..K-1."""
    ids = list(track_ids) if track_ids is not None else list(range(len(scores)))
    return [
        OverlayInstance(
            label=int(lab), score=float(s), masks=np.asarray(m, dtype=bool), track_id=int(i)
        )
        for s, lab, m, i in zip(scores, labels, masks, ids)
    ]


def _font(height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = max(MIN_FONT_PX, int(round(height * FONT_FRACTION)))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def draw_frame(
    frame: np.ndarray,  # (H, W, 3) uint8
    frame_index: int,
    instances: Sequence[OverlayInstance],
    class_names: Sequence[str],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> np.ndarray:
    """The frame with every instance that has a mask in it drawn on top: (H, W, 3) uint8."""
    out = frame.astype(np.float32)
    labels: list[tuple[int, int, str, np.ndarray]] = []  # (x, y) of the mask's top left, text, RGB
    for position, inst in enumerate(instances):
        mask = inst.masks[frame_index]
        if not mask.any():
            continue
        color = np.array(inst.color or DEFAULT_PALETTE[position % len(DEFAULT_PALETTE)], np.float32)
        out[mask] = (1.0 - MASK_ALPHA) * out[mask] + MASK_ALPHA * color
        outline = mask & ~binary_erosion(mask, iterations=OUTLINE_WIDTH)
        out[outline] = color
        ys, xs = np.nonzero(mask)
        name = (
            class_names[inst.label] if 0 <= inst.label < len(class_names) else f"class_{inst.label}"
        )
        labels.append(
            (int(xs.min()), int(ys.min()), f"{name} #{inst.track_id} {inst.score:.2f}", color)
        )
    image = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for mask_x, mask_y, text, color in labels:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = right - left + 2 * LABEL_PAD_PX, bottom - top + 2 * LABEL_PAD_PX
        x = min(max(mask_x, 0), max(image.width - width, 0))
        y = mask_y - height if mask_y - height >= 0 else mask_y
        draw.rectangle((x, y, x + width, y + height), fill=tuple(int(c) for c in color))
        draw.text(
            (x + LABEL_PAD_PX - left, y + LABEL_PAD_PX - top), text, fill=TEXT_COLOR, font=font
        )
    return np.asarray(image)


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row / column when odd."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frame


def _check_inputs(frames: np.ndarray, instances: Sequence[OverlayInstance]) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    for inst in instances:
        if inst.masks.shape != frames.shape[:3]:
            raise ValueError(
                f"instance track {inst.track_id}: masks of shape {inst.masks.shape}, "
                f"expected (T, H, W) = {frames.shape[:3]}"
            )


def _audio_layout(audio: np.ndarray) -> tuple[np.ndarray, str]:
    """(N,) or (N, C) float -> (N, C) float32 and its channel layout; more than 6 channels
    are mixed to mono."""
    samples = np.asarray(audio, dtype=np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples  # (N, C)
    if samples.shape[1] not in CHANNEL_LAYOUTS:
        samples = samples.mean(axis=1, keepdims=True)
    return samples, CHANNEL_LAYOUTS[samples.shape[1]]


def _encode_audio(container, stream, samples: np.ndarray, sample_rate: int, layout: str) -> None:
    resampler = av.AudioResampler(
        format="fltp", layout=layout, rate=stream.rate, frame_size=AUDIO_FRAME_SIZE
    )
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples.T), format="fltp", layout=layout
    )
    frame.sample_rate, frame.pts = sample_rate, 0
    for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
        container.mux(stream.encode(chunk))
    container.mux(stream.encode(None))


def write_overlay_video(
    path: str | Path,
    frames: np.ndarray,  # (T, H, W, 3) uint8 RGB
    instances: Sequence[OverlayInstance],
    class_names: Sequence[str],
    audio: np.ndarray | None = None,  # (N,) or (N, C) float in [-1, 1]
    sample_rate: int | None = None,
    fps: float = 1.0,
    output_fps: float = DEFAULT_OUTPUT_FPS,
    duration: float | None = None,
) -> Path:
    """Write the overlay mp4 (h264, + AAC when audio is given); returns the path.

    Frame i covers [i / fps, (i + 1) / fps); it is repeated to fill `output_fps` (use
    output_fps=fps for one encoded frame per input frame). `duration`: where the media ends
    (seconds, at most T / fps; default T / fps): video and audio stop there.
    """
    path = Path(path)
    frames = np.asarray(frames)
    _check_inputs(frames, instances)
    if audio is not None and not sample_rate:
        raise ValueError("audio given without sample_rate")
    num_frames = frames.shape[0]
    full = num_frames / fps
    duration = full if duration is None else min(max(float(duration), 0.0), full)
    rate = max(float(output_fps), float(fps))
    rate_fraction = Fraction(rate).limit_denominator(1001)
    num_out = max(1, int(math.ceil(duration * rate - 1e-9)))
    font = _font(frames.shape[1])
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        video = container.add_stream(VIDEO_CODEC, rate=rate_fraction, options=VIDEO_OPTIONS)
        first = _even(frames[0]) if num_frames else frames[0]
        video.height, video.width, video.pix_fmt = first.shape[0], first.shape[1], VIDEO_PIX_FMT
        audio_stream = None
        in_rate = 0  # the soundtrack's sample rate (when audio is given)
        if audio is not None:
            assert sample_rate, "checked above: audio comes with a sample rate"
            in_rate = int(sample_rate)
            samples, layout = _audio_layout(audio)
            samples = samples[: int(round(duration * sample_rate))]
            rates = av.codec.Codec(AUDIO_CODEC, "w").audio_rates  # None: any rate
            out_rate = in_rate if rates is None or in_rate in rates else FALLBACK_AUDIO_RATE
            audio_stream = container.add_stream(AUDIO_CODEC, rate=out_rate, layout=layout)
            audio_stream.bit_rate = AUDIO_BIT_RATE
        drawn_index = -1
        drawn: np.ndarray | None = None
        for out_index in range(num_out):
            index = min(int(out_index * fps / rate + 1e-9), num_frames - 1)
            if index != drawn_index:
                drawn = _even(draw_frame(frames[index], index, instances, class_names, font))
                drawn_index = index
            assert drawn is not None, "the first output frame always draws its input frame"
            picture = av.VideoFrame.from_ndarray(drawn, format="rgb24")
            picture.pts = out_index
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        if audio_stream is not None and samples.shape[0]:
            _encode_audio(container, audio_stream, samples, in_rate, layout)
    return path
