"""Statistics of an annotation file: what `avis data stats` prints.

A frame is "silent" when no instance has a segmentation there, "single-source" with exactly
one, "multi-source" with two or more (only sounding, visible instances carry segmentations).

Letters: K classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avis.data.annotations import Annotations


@dataclass
class ClassStats:
    name: str
    tracks: int = 0  # instance tracks of the class
    masks: int = 0  # non-null (sounding, visible) frames over its tracks
    videos: int = 0  # videos with at least one track of the class


@dataclass
class SplitStats:
    videos: int
    frames: int
    tracks: int
    masks: int  # non-null segmentations
    silent_frames: int
    single_source_frames: int
    multi_source_frames: int
    track_sounding_fraction: float  # non-null frames / frames, over all tracks
    min_length: int
    max_length: int
    per_class: dict[int, ClassStats] = field(default_factory=dict)  # category id -> stats

    @property
    def silent_fraction(self) -> float:
        return self.silent_frames / max(self.frames, 1)

    @property
    def sounding_fraction(self) -> float:
        """Frames with at least one sounding instance / all frames."""
        return 1.0 - self.silent_fraction

    @property
    def multi_source_fraction(self) -> float:
        return self.multi_source_frames / max(self.frames, 1)

    def to_dict(self) -> dict:
        return {
            "videos": self.videos, "frames": self.frames, "tracks": self.tracks, "masks": self.masks,
            "min_length": self.min_length, "max_length": self.max_length,
            "sounding_fraction": self.sounding_fraction, "silent_fraction": self.silent_fraction,
            "multi_source_fraction": self.multi_source_fraction,
            "single_source_fraction": self.single_source_frames / max(self.frames, 1),
            "track_sounding_fraction": self.track_sounding_fraction,
            "per_class": {c.name: {"tracks": c.tracks, "masks": c.masks, "videos": c.videos} for c in self.per_class.values()},
        }  # fmt: skip


def annotation_stats(ann: Annotations) -> SplitStats:
    per_class = {c.id: ClassStats(name=c.name) for c in sorted(ann.categories, key=lambda c: c.id)}
    sources = {v.id: [0] * v.length for v in ann.videos}  # sounding instances per frame
    class_videos: dict[int, set[int]] = {c: set() for c in per_class}
    masks = track_frames = 0
    for track in ann.tracks:
        stats = per_class[track.category_id]
        stats.tracks += 1
        class_videos[track.category_id].add(track.video_id)
        counts = sources[track.video_id]
        for t, seg in enumerate(track.segmentations):
            if seg is not None:
                counts[t] += 1
                stats.masks += 1
                masks += 1
        track_frames += len(track.segmentations)
    for cid, vids in class_videos.items():
        per_class[cid].videos = len(vids)
    all_counts = [n for counts in sources.values() for n in counts]
    lengths = [v.length for v in ann.videos] or [0]
    return SplitStats(
        videos=len(ann.videos), frames=len(all_counts), tracks=len(ann.tracks), masks=masks,
        silent_frames=sum(n == 0 for n in all_counts),
        single_source_frames=sum(n == 1 for n in all_counts),
        multi_source_frames=sum(n >= 2 for n in all_counts),
        track_sounding_fraction=masks / max(track_frames, 1),
        min_length=min(lengths), max_length=max(lengths), per_class=per_class,
    )  # fmt: skip
