"""Drawing frames of a scene, and the exact polygon ground truth of what is visible.

Frames: the background (texture and pixel noise included), then every object back to front,
each drawn as its polygons into a supersampled coverage mask (anti-aliasing) composited with
its flat colour. Ground truth: the same polygons, minus the polygons of the objects in front, cut
to the frame (geometry.visible_pieces) — the geometry the pixels were drawn from.

Letters: S frame side, s supersampling factor.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from avis.data.synth.geometry import box, visible_pieces
from avis.data.synth.scene import Scene

POLYGON_DECIMALS = 2  # coordinates are rounded to 0.01 px in the JSON
PIL_CENTER = 0.5  # PIL puts pixel centres at integers; our pixel (x, y) covers [x, x+1)


def _coverage(parts: list[np.ndarray], size: int, ss: int) -> tuple[np.ndarray, int, int] | None:
    """Coverage in 0..1 of the union of parts over its clipped pixel box, and the box origin."""
    pts = np.concatenate(parts)
    x0, y0 = np.floor(pts.min(0)).astype(int).clip(0, size)
    x1, y1 = np.ceil(pts.max(0)).astype(int).clip(0, size)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for part in parts:
        xy = (part - np.array([x0, y0])) * ss - PIL_CENTER
        draw.polygon([tuple(p) for p in xy.tolist()], fill=255)
    alpha = np.asarray(canvas.reduce(ss), dtype=np.float32) / 255.0
    return alpha, int(x0), int(y0)


def scene_parts(scene: Scene, t: float) -> list[list[np.ndarray]]:
    """The convex parts of every object (back to front) at time t (seconds)."""
    return [obj.parts(t) for obj in scene.objects]


def render_frame(scene: Scene, parts: list[list[np.ndarray]], supersample: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB frame of the objects' parts (`scene_parts`) over the background."""
    img = scene.background.copy()
    for obj, obj_parts in zip(scene.objects, parts):
        cov = _coverage(obj_parts, scene.size, supersample)
        if cov is None:
            continue
        alpha, x0, y0 = cov
        region = img[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
        region += alpha[..., None] * (obj.color - region)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def visible_polygons(parts: list[list[np.ndarray]], index: int, size: int) -> list[list[float]]:
    """COCO polygons of the visible part of object `index` (empty if hidden) in an S x S frame."""
    occluders = [p for obj_parts in parts[index + 1 :] for p in obj_parts]
    pieces = visible_pieces(parts[index], occluders, box(0, 0, size, size))
    return [np.round(p, POLYGON_DECIMALS).ravel().tolist() for p in pieces]
