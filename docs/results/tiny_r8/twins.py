"""Shared by the r8 analysis scripts: the twin pairs of a split (two tracks of one class)."""

from collections.abc import Iterator


def twin_pairs(data) -> Iterator[tuple[object, list[tuple[int, object, object]]]]:
    """(video, [(category_id, track_a, track_b), ...]) for every video with twins, by id."""
    for video in sorted(data.videos, key=lambda v: v.id):
        tracks = data.tracks[video.id]
        cats = [t.category_id for t in tracks]
        pairs = []
        for c in sorted(set(cats)):
            if cats.count(c) == 2:
                a, b = (t for t in tracks if t.category_id == c)
                pairs.append((c, a, b))
        if pairs:
            yield video, pairs
