"""Exact 2-D geometry on convex polygons, for occlusion-aware polygon ground truth.

A shape is a union of convex polygons ("parts"). The visible region of an object is its parts
minus the parts of every object in front of it, cut to the frame. A convex polygon minus a
convex polygon is a union of disjoint convex pieces (one per occluder edge it crosses), so the
result stays a list of convex polygons: exactly what COCO polygon segmentations (a union of
polygons, merged by pycocotools) can hold — holes included, as pieces around them. A convex
polygon minus a convex occluder = the union over the occluder's edges of the polygon cut to the
outer side of that edge.

Letters: V vertices; polygons are (V, 2) float64 arrays of (x, y) in pixel-edge coordinates.
"""

from __future__ import annotations

import numpy as np

AREA_EPS = 1e-6  # pieces with a smaller area (px^2) are dropped


def signed_area(poly: np.ndarray) -> float:
    """Shoelace area, positive for counter-clockwise vertices (in x-right, y-up axes)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])


def area(poly: np.ndarray) -> float:
    return abs(signed_area(poly)) if len(poly) >= 3 else 0.0


def halfplanes(poly: np.ndarray) -> np.ndarray:
    """(V, 3) rows (a, b, c) per edge of a convex polygon, a*x + b*y + c >= 0 on the inside."""
    orient = 1.0 if signed_area(poly) >= 0 else -1.0
    d = np.concatenate([poly[1:], poly[:1]]) - poly  # (V, 2) edge vectors
    a, b = -d[:, 1] * orient, d[:, 0] * orient  # inward normals
    return np.stack([a, b, -(a * poly[:, 0] + b * poly[:, 1])], axis=1)


def clip(poly: np.ndarray, plane: tuple[float, float, float]) -> np.ndarray:
    """The part of a convex polygon where a*x + b*y + c >= 0 (Sutherland-Hodgman, one edge)."""
    if len(poly) == 0:
        return poly
    a, b, c = plane
    d = poly[:, 0] * a + poly[:, 1] * b + c  # (V,) signed distances
    if (d >= 0).all():
        return poly
    if (d <= 0).all():
        return poly[:0]
    inside = d >= 0
    nxt = np.concatenate([poly[1:], poly[:1]])  # (V, 2) next vertex
    d_next = np.concatenate([d[1:], d[:1]])
    cross = inside != np.concatenate([inside[1:], inside[:1]])
    denom = np.where(cross, d - d_next, 1.0)
    inter = poly + (d / denom)[:, None] * (nxt - poly)  # (V, 2) edge / line crossings
    # per edge i: vertex i if inside, then the crossing on edge i if the edge crosses
    out = np.stack([poly, inter], axis=1).reshape(-1, 2)[np.stack([inside, cross], axis=1).reshape(-1)]
    return out if len(out) >= 3 else poly[:0]


def _boxes_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    return bool((p.min(0) < q.max(0)).all() and (q.min(0) < p.max(0)).all())


def _inside(poly: np.ndarray, frame: np.ndarray) -> bool:
    """Whether poly's bounding box lies inside the (axis-aligned) frame box."""
    return bool((poly.min(0) >= frame.min(0)).all() and (poly.max(0) <= frame.max(0)).all())


def subtract(piece: np.ndarray, occluder: np.ndarray) -> list[np.ndarray]:
    """Convex pieces whose union is `piece` minus `occluder` (both convex).

    One piece per occluder edge: `piece` cut to the outer side of that edge. The pieces overlap
    on purpose: a seam between two pieces always lies inside a third one, so rasterising the
    union leaves no hairline gaps along the cut lines (disjoint pieces would)."""
    if not _boxes_overlap(piece, occluder):
        return [piece]
    out = []
    for a, b, c in halfplanes(occluder):
        outside = clip(piece, (-a, -b, -c))
        if len(outside) == len(piece) and outside is piece:
            return [piece]  # entirely outside this edge: untouched
        if area(outside) > AREA_EPS:
            out.append(outside)
    return out


def visible_pieces(parts: list[np.ndarray], occluders: list[np.ndarray], frame: np.ndarray) -> list[np.ndarray]:
    """Convex pieces of the union of `parts` not covered by any occluder, inside `frame`.

    `frame` is an axis-aligned box (see `box`)."""
    pieces = []
    frame_planes = halfplanes(frame)
    for part in parts:
        current = [part]
        if not _inside(part, frame):
            for plane in frame_planes:
                current = [q for q in (clip(p, plane) for p in current) if area(q) > AREA_EPS]
        for occ in occluders:
            current = [q for p in current for q in subtract(p, occ)]
            if not current:
                break
        pieces.extend(current)
    return pieces


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
