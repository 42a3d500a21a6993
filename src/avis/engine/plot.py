"""Training curves as a PNG drawn with Pillow (no plotting library needed).

Panels: total loss (log scale), the loss terms (log scale), learning rate, and the
evaluation metrics (if any) against the iteration.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

PANEL_W, PANEL_H = 560, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 150, 28, 32
COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip
LOSS_TERMS = ("frame_ce", "frame_mask", "frame_dice", "video_ce", "video_mask", "video_dice", "sim")
EVAL_KEYS = ("FSLA", "HOTA", "mAP")
TICKS = 4


def _series(records: list[dict], kind: str, key: str) -> list[tuple[float, float]]:
    points = []
    for r in records:
        value = r.get(key)
        if (
            r.get("kind", "train") == kind
            and isinstance(value, (int, float))
            and math.isfinite(value)
        ):
            points.append((float(r["iteration"]), float(value)))
    return points


def _panel(title: str, series: dict[str, list[tuple[float, float]]], log_y: bool) -> Image.Image:
    image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN_L, 6), title, fill="black")
    x0, y0, x1, y1 = MARGIN_L, MARGIN_T, PANEL_W - MARGIN_R, PANEL_H - MARGIN_B
    draw.rectangle([x0, y0, x1, y1], outline="black")
    points = [p for s in series.values() for p in s if not log_y or p[1] > 0]
    if not points:
        draw.text((x0 + 10, y0 + 10), "no data yet", fill="gray")
        return image

    def fy(v: float) -> float:
        return math.log10(v) if log_y else v

    xs = [p[0] for p in points]
    ys = [fy(p[1]) for p in points]
    xmin, xmax = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymin, ymax = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = x0 + (x - xmin) / (xmax - xmin) * (x1 - x0)
        py = y1 - (fy(y) - ymin) / (ymax - ymin) * (y1 - y0)
        return px, py

    for i in range(TICKS + 1):
        value = ymin + (ymax - ymin) * i / TICKS
        label = f"{10**value:.3g}" if log_y else f"{value:.3g}"
        py = y1 - (y1 - y0) * i / TICKS
        draw.line([x0 - 4, py, x0, py], fill="black")
        draw.text((4, py - 6), label, fill="black")
        it = xmin + (xmax - xmin) * i / TICKS
        px = x0 + (x1 - x0) * i / TICKS
        draw.text((px - 10, y1 + 6), f"{it:.0f}", fill="black")
    for index, (name, pts) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        pixels = [to_px(x, y) for x, y in pts if not log_y or y > 0]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels if len(pixels) < 20 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((x1 + 8, y0 + 14 * index), name, fill=colour)
    return image


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Write the curves of a run's metrics records to `path` (PNG)."""
    terms = {t: _series(records, "train", t) for t in LOSS_TERMS}
    evals = {k: _series(records, "eval", k) for k in EVAL_KEYS}
    panels = [
        _panel("training loss", {"loss": _series(records, "train", "loss")}, log_y=True),
        _panel("loss terms (weighted)", {k: v for k, v in terms.items() if v}, log_y=True),
        _panel("learning rate", {"lr": _series(records, "train", "lr")}, log_y=False),
        _panel("evaluation", {k: v for k, v in evals.items() if v}, log_y=False),
    ]
    sheet = Image.new("RGB", (PANEL_W * 2, PANEL_H * 2), "white")
    for index, panel in enumerate(panels):
        sheet.paste(panel, ((index % 2) * PANEL_W, (index // 2) * PANEL_H))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(path)
