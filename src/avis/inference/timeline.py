"""Timeline picture: one row per predicted instance, coloured in the frames where it sounds.

Layout (pixels): a label column on the left ("#i class score"), then one cell per frame;
a time axis on top with a tick every `tick_every` seconds. Drawn with Pillow only.

Letters: N instances, T frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avis.inference.summary import TrackSummary
from avis.io.atomic import atomic_open

# Distinct, readable colours (RGB); instance i uses PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
    (128, 0, 0), (0, 0, 128), (128, 128, 0), (255, 215, 180), (170, 255, 195),
)  # fmt: skip
BACKGROUND = (255, 255, 255)
SILENT_CELL = (225, 225, 225)
TEXT = (20, 20, 20)
GRID = (255, 255, 255)
LABEL_WIDTH = 190
ROW_HEIGHT = 22
ROW_GAP = 4
AXIS_HEIGHT = 22
MARGIN = 8
MAX_PLOT_WIDTH = 1200
MIN_CELL, MAX_CELL = 2, 28
TARGET_TICKS = 10


def instance_color(index: int) -> tuple[int, int, int]:
    """Colour of the instance at 0-based position `index` (same in overlay and timeline)."""
    return PALETTE[index % len(PALETTE)]


def _tick_step(num_frames: int, fps: float) -> int:
    """Frames between ticks: a 1/2/5 x 10^k number of seconds giving about TARGET_TICKS ticks."""
    seconds = max(num_frames / fps, 1e-9)
    for base in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000):
        if seconds / base <= TARGET_TICKS:
            return max(1, round(base * fps))
    return max(1, num_frames // TARGET_TICKS)


def draw_timeline(
    summaries: Sequence[TrackSummary],
    num_frames: int,
    fps: float,
    title: str = "",
    duration: float | None = None,
) -> Image.Image:
    """The timeline of one video as an RGB image (a "no instances" row when empty). With
    `duration` (seconds) the last frame's cell ends where the media ends."""
    num_frames = max(int(num_frames), 1)
    cell = int(np.clip(MAX_PLOT_WIDTH // num_frames, MIN_CELL, MAX_CELL))
    span = num_frames if duration is None else float(np.clip(duration * fps, num_frames - 1, num_frames))
    plot_width = max(1, int(round(cell * span)))
    rows = max(len(summaries), 1)
    title_height = ROW_HEIGHT if title else 0
    width = MARGIN * 2 + LABEL_WIDTH + plot_width
    height = MARGIN * 2 + title_height + AXIS_HEIGHT + rows * (ROW_HEIGHT + ROW_GAP)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x0, y = MARGIN + LABEL_WIDTH, MARGIN
    if title:
        draw.text((MARGIN, y + 4), title, fill=TEXT, font=font)
        y += title_height
    step = _tick_step(num_frames, fps)
    for t in range(0, num_frames, step):
        x = x0 + t * cell
        draw.line([(x, y + AXIS_HEIGHT - 6), (x, y + AXIS_HEIGHT - 1)], fill=TEXT)
        draw.text((x + 2, y + 2), f"{t / fps:g}s", fill=TEXT, font=font)
    y += AXIS_HEIGHT
    if not summaries:
        draw.text((MARGIN, y + 5), "no instances above the threshold", fill=TEXT, font=font)
        return image
    for summary in summaries:
        color = instance_color(summary.instance - 1)
        label = f"#{summary.instance} {summary.class_name} {summary.score:.2f}"
        draw.rectangle([MARGIN, y + 4, MARGIN + 10, y + 14], fill=color)
        draw.text((MARGIN + 16, y + 5), label[:28], fill=TEXT, font=font)
        sounding = set(summary.sounding_frames)
        for t in range(num_frames):
            x = x0 + t * cell
            right = min(x + cell, x0 + plot_width) - 1  # the last cell ends with the media
            fill = color if t in sounding else SILENT_CELL
            draw.rectangle([x, y, max(x, right), y + ROW_HEIGHT - 1], fill=fill)
            if cell > MIN_CELL * 2:
                draw.line([(x, y), (x, y + ROW_HEIGHT - 1)], fill=GRID)
        y += ROW_HEIGHT + ROW_GAP
    return image


def write_timeline(
    summaries: Sequence[TrackSummary],
    num_frames: int,
    fps: float,
    path: Path,
    title: str = "",
    duration: float | None = None,
) -> Path:
    """Draw and write the timeline PNG atomically."""
    image = draw_timeline(summaries, num_frames, fps, title, duration)
    with atomic_open(path) as handle:
        image.save(handle, format="PNG")
    return Path(path)
