"""Per-frame segmentations of AVISeg: COCO polygons or RLE, decoded with pycocotools.

A segmentation is what one frame of `annotations[i].segmentations` holds:
- a polygon list `[[x0, y0, x1, y1, ...], ...]` (the union of the polygons; coordinates are
  pixel edges, pixel (x, y) covers [x, x+1) x [y, y+1)),
- an RLE dict `{"size": [h, w], "counts": str | list[int]}` (compressed or not),
- or None (the instance is not sounding or not visible in that frame).

Letters: H x W the video frame size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from avis.eval.rle import check_polygon_coords

Polygons = list[list[float]]
RLE = dict[str, Any]
Segmentation = Polygons | RLE

# pycocotools reads a polygon of exactly 4 numbers as a box; polygons need >= 3 points.
MIN_POLYGON_COORDS = 6


def segmentation_kind(seg: object) -> str:
    """'polygon', 'rle' or 'null'; raises ValueError with what was found otherwise."""
    if seg is None:
        return "null"
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise ValueError(f"an RLE dict needs 'counts' and 'size', found keys {sorted(seg)}")
        size = seg["size"]
        if not (isinstance(size, list | tuple) and len(size) == 2):
            raise ValueError(f"RLE 'size' must be [height, width], found {size!r}")
        if not isinstance(seg["counts"], str | bytes | list):
            raise ValueError(f"RLE 'counts' must be a string or a list, found {type(seg['counts']).__name__}")
        return "rle"
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list | tuple):
                raise ValueError(f"polygon {k} must be a list of numbers, found {type(poly).__name__}")
            if len(poly) % 2:
                raise ValueError(f"polygon {k} must have an even number of coordinates, found {len(poly)}")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in poly):
                raise ValueError(f"polygon {k} must hold only numbers")
        return "polygon"
    raise ValueError(f"expected a polygon list, an RLE dict or null, found {type(seg).__name__}")


def to_rle(seg: Segmentation, height: int, width: int) -> RLE:
    """One compressed RLE of the whole segmentation (the union of its polygons)."""
    if isinstance(seg, dict):
        if isinstance(seg["counts"], list):  # uncompressed RLE
            return mask_utils.frPyObjects(seg, *seg["size"])
        counts = seg["counts"]
        return {"size": list(seg["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    polys = [list(map(float, p)) for p in seg if len(p) >= MIN_POLYGON_COORDS]
    check_polygon_coords(polys, height, width)  # pycocotools crashes on NaN or huge values
    if not polys:
        return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))


def decode_segmentation(seg: Segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a polygon list or RLE dict."""
    if isinstance(seg, dict) and [int(v) for v in seg["size"]] != [height, width]:
        raise ValueError(f"RLE size {list(seg['size'])} != frame size [{height}, {width}]")
    return mask_utils.decode(to_rle(seg, height, width)).astype(bool)


def encode_mask(mask: np.ndarray) -> RLE:
    """Compressed RLE (counts as str, JSON-ready) of an (H, W) bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def area_and_bbox(seg: Segmentation, height: int, width: int) -> tuple[float, list[float]]:
    """Pixel area and [x, y, w, h] box of a segmentation, as pycocotools computes them."""
    rle = to_rle(seg, height, width)
    return float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
