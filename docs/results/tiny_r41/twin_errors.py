"""Error types of a checkpoint's twin pairs (splitting off), and where its tracks jump.

A twin pair: two tracks of one class in a test video whose class sounds. Per pair:
separated (two different tracks each with video IoU > 0.5 with a different twin), union (a
track's IoU with both twins together is > 0.5 and above its IoU with either), one twin only,
neither; and whether some track of the class is one twin in some frames and the other in
others (IoU > 0.5 frame by frame: a jump). With --jumps, one line per jumping track: video,
class, score, per frame A / B (IoU > 0.5 with that twin), u (with both together), . (neither),
and the twins' centroid distance (in frame sides) where the track changes twin.

    python twin_errors.py CKPT SIDE ROOT [--jumps]      # ROOT: a test split (eval-seeds cache)
"""

import collections
import dataclasses
import sys

import numpy as np
import torch

from avis.data import load_split
from avis.data.annotations import decode_track
from avis.inference.predictor import VideoPredictor


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def centroid(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()]) if len(ys) else None


def frame_letters(track: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    letters = []
    for m, ma, mb in zip(track, a, b):
        if iou(m, ma) > 0.5:
            letters.append("A")
        elif iou(m, mb) > 0.5:
            letters.append("B")
        elif m.any() and iou(m, ma | mb) > 0.5:
            letters.append("u")
        else:
            letters.append(".")
    return "".join(letters)


def switches(letters: str, a: np.ndarray, b: np.ndarray, side: int) -> list[str]:
    out, last = [], None
    for t, ch in enumerate(letters):
        if ch not in "AB":
            continue
        if last is not None and ch != letters[last]:
            ca, cb = centroid(a[t]), centroid(b[t])
            d = np.linalg.norm(ca - cb) / side if ca is not None and cb is not None else -1.0
            out.append(f"{last}->{t} d={d:.2f}")
        last = t
    return out


def main() -> None:
    ckpt, side, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    show = "--jumps" in sys.argv
    torch.set_num_threads(2)
    p = VideoPredictor.from_checkpoint(ckpt, split_components=False)
    p.config = dataclasses.replace(p.config, test_short_side=side, test_max_size=2 * side)
    data = load_split(root, "test", spatial_audio=p.config.spatial_audio)
    counts: collections.Counter = collections.Counter()
    for video in sorted(data.videos, key=lambda v: v.id):
        tracks = data.tracks[video.id]
        cats = [t.category_id for t in tracks]
        pairs = [c for c in sorted(set(cats)) if cats.count(c) == 2]
        if not pairs:
            continue
        frames = data.load_frames(video)
        audio = data.load_audio_input(video).astype(np.float32)
        h, w = frames.shape[1:3]
        scores, labels, masks = p.predict_arrays(frames, audio)
        for c in pairs:
            a, b = (decode_track(t) for t in tracks if t.category_id == c)
            sel = [i for i in range(len(labels)) if labels[i] == c - 1 and scores[i] > 0.05]
            ia = [iou(masks[i], a) for i in sel]
            ib = [iou(masks[i], b) for i in sel]
            iu = [iou(masks[i], a | b) for i in sel]
            best_a, best_b = max(ia, default=0.0), max(ib, default=0.0)
            if best_a > 0.5 and best_b > 0.5 and np.argmax(ia) != np.argmax(ib):
                kind = "separated"
            elif max(iu, default=0.0) > max(0.5, best_a, best_b):
                kind = "union"
            elif best_a > 0.5 or best_b > 0.5:
                kind = "one twin only"
            else:
                kind = "neither"
            counts[kind] += 1
            counts["pairs"] += 1
            jumped = False
            for i in sel:
                letters = frame_letters(masks[i], a, b)
                if "A" in letters and "B" in letters:
                    jumped = True
                    if show:
                        moves = " ".join(switches(letters, a, b, max(h, w)))
                        print(video.id, c, f"{scores[i]:.2f}", letters, moves)
            counts["pairs with a jumping track"] += jumped
    print(ckpt, side, dict(counts))


if __name__ == "__main__":
    main()
