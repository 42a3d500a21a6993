"""Frame by frame for one twin pair: which frame-decoder slot holds each twin, and which twin
each of the class's video tracks covers (splitting off, the checkpoint's test side).

Per frame: the twins' mask centroids (x, y in frame sides), for each twin the frame query
(slot) whose frame mask has the highest IoU with it, that IoU and the slot's probability of
the twins' class, then one letter per video track of the class (A / B: IoU > 0.5 with that
twin in this frame, . neither).

    python slots.py CKPT ROOT VIDEO_ID CATEGORY_ID    # ROOT: a test split (eval-seeds cache)

With --all instead of a video and class: over every twin pair of the split, each frame's
*confident twin* (of the two twins' best-matching slots, the one with the higher class
probability, when that probability is > 0.5 and the slots differ), and for every change of
twin of a video track between two frames where it covers a twin (a jump) whether the confident
twin changed between the same two frames (counted where both frames have one); also how often
the confident twin changes at all.

    python slots.py CKPT ROOT --all [SPLIT [N]]     # SPLIT (default test), its first N twin videos

It also counts the frames where both twins are present and both have their own slot (IoU >
0.5) with the class (probability > 0.5): how often the frame level finds *and* classifies both.
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from avis.data import load_split
from avis.data.annotations import decode_track
from avis.inference.predictor import VideoPredictor


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def centroid(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return "(   -   )"
    return f"({xs.mean() / mask.shape[1]:.2f},{ys.mean() / mask.shape[0]:.2f})"


def run_video(predictor: VideoPredictor, data, video):
    """-> video tracks (scores, labels, masks), frame-slot masks (T, fQ, H, W) bool and the
    frame decoder's class probabilities (T, fQ, K + 1)."""
    frames = data.load_frames(video)
    audio = data.load_audio_input(video).astype(np.float32)
    scores, labels, masks = predictor.predict_arrays(frames, audio)
    t_len, h, w = frames.shape[:3]
    with torch.no_grad():
        encode, (hi, wi), _ = predictor.encoder(frames, torch.from_numpy(audio))
        frame = encode(0, t_len, True).frame
        logits = frame.pred_masks[-1]  # (T, fQ, Hi/4, Wi/4)
        up = F.interpolate(logits, scale_factor=4, mode="bilinear")[..., :hi, :wi]
        slot_masks = (F.interpolate(up, size=(h, w), mode="bilinear") > 0).numpy()
        prob = frame.pred_logits[-1].softmax(-1).numpy()  # (T, fQ, K + 1)
    return (scores, labels, masks), slot_masks, prob


def letter(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    return "A" if iou(mask, a) > 0.5 else "B" if iou(mask, b) > 0.5 else "."


def confident_twin(slot_masks: np.ndarray, prob: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    """One frame: 'A' / 'B' (the twin whose best slot is more confident of the class), '.' none."""
    best = []
    for twin in (a, b):
        ious = [iou(m, twin) for m in slot_masks]
        slot = int(np.argmax(ious))
        best.append(slot if ious[slot] > 0.5 else None)
    if None in best or best[0] == best[1]:
        return "."
    pa, pb = prob[best[0]], prob[best[1]]
    if max(pa, pb) <= 0.5:
        return "."
    return "A" if pa > pb else "B"


def both_classified(slot_masks: np.ndarray, prob: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """One frame: both twins have their own slot (IoU > 0.5) with class probability > 0.5."""
    slots = []
    for twin in (a, b):
        slots.append({q for q, m in enumerate(slot_masks) if iou(m, twin) > 0.5 and prob[q] > 0.5})
    return bool(slots[0]) and bool(slots[1]) and len(slots[0] | slots[1]) >= 2


def summary(predictor: VideoPredictor, data, limit: int) -> None:
    jumps = defined_both = coincide = changes = steps = present = classified = 0
    videos = 0
    for video in sorted(data.videos, key=lambda v: v.id):
        cats = [t.category_id for t in data.tracks[video.id]]
        pairs = [c for c in sorted(set(cats)) if cats.count(c) == 2]
        if not pairs or videos >= limit:
            continue
        videos += 1
        (scores, labels, masks), slot_masks, prob = run_video(predictor, data, video)
        for cat in pairs:
            a, b = (decode_track(t) for t in data.tracks[video.id] if t.category_id == cat)
            conf = [confident_twin(slot_masks[t], prob[t, :, cat - 1], a[t], b[t]) for t in range(len(a))]
            for t in range(len(a)):
                if a[t].any() and b[t].any():
                    present += 1
                    classified += both_classified(slot_masks[t], prob[t, :, cat - 1], a[t], b[t])
            defined = [t for t, c in enumerate(conf) if c != "."]
            steps += max(len(defined) - 1, 0)
            changes += sum(conf[s] != conf[t] for s, t in zip(defined, defined[1:]))
            for i in (i for i in range(len(labels)) if labels[i] == cat - 1 and scores[i] > 0.05):
                letters = [letter(m, at, bt) for m, at, bt in zip(masks[i], a, b)]
                held = [t for t, ch in enumerate(letters) if ch != "."]
                for s, t in zip(held, held[1:]):
                    if letters[s] == letters[t]:
                        continue
                    jumps += 1
                    if conf[s] != "." and conf[t] != ".":
                        defined_both += 1
                        coincide += conf[s] != conf[t]
    print(
        f"jumps {jumps}, {defined_both} of them between frames that both have a confident twin,"
        f" which changed between the same frames in {coincide}; the confident twin changes {changes} of {steps}"
        f" steps between frames where it is defined ({100 * changes / max(steps, 1):.1f} %);"
        f" {videos} videos: both twins found and classified in {classified} of {present} frames"
        f" where both are present ({100 * classified / max(present, 1):.1f} %)"
    )


def main() -> None:
    torch.set_num_threads(1)
    ckpt, root = sys.argv[1], sys.argv[2]
    predictor = VideoPredictor.from_checkpoint(ckpt, split_components=False)
    if sys.argv[3] == "--all":
        split = sys.argv[4] if len(sys.argv) > 4 else "test"
        summary(predictor, load_split(root, split, spatial_audio=predictor.config.spatial_audio), int(sys.argv[5]) if len(sys.argv) > 5 else 10**9)
        return
    data = load_split(root, "test", spatial_audio=predictor.config.spatial_audio)
    video_id, cat = int(sys.argv[3]), int(sys.argv[4])
    video = next(v for v in data.videos if v.id == video_id)
    a, b = (decode_track(t) for t in data.tracks[video_id] if t.category_id == cat)
    (scores, labels, masks), slot_masks, prob = run_video(predictor, data, video)
    prob = prob[..., cat - 1]  # (T, fQ)
    tracks = [i for i in range(len(labels)) if labels[i] == cat - 1 and scores[i] > 0.05]
    for t in range(len(a)):
        row = f"t{t:02d} A{centroid(a[t])} B{centroid(b[t])}"
        for name, twin in (("A", a[t]), ("B", b[t])):
            ious = [iou(m, twin) for m in slot_masks[t]]
            slot = int(np.argmax(ious))
            row += f" slot{name} {slot:2d} {ious[slot]:.2f} p{prob[t, slot]:.2f}"
        print(row, "|", " ".join(letter(masks[i][t], a[t], b[t]) for i in tracks))


if __name__ == "__main__":
    main()
