"""Where a checkpoint's twin-video mAP goes (splitting off, fixed protocol).

On the videos with twins of a test split (`avis.engine.seeds.twin_video_ids`), the model's
tracks are scored as they are (mAP, AP50, AP75, AR), then twice more with only the track
*scores* replaced, to separate ranking from masks:
- "oracle scores": each track's score becomes its best whole-video mask IoU with a ground-truth
  track of its class (the masks stay; what is lost here is lost in the masks or missing tracks);
- "no duplicates": tracks whose best IoU is with a ground-truth track that an earlier (higher
  scored) track of the video already covers better get score 0.001 (what duplicate and
  union tracks ranked above the right ones cost).
Also per ground-truth twin track: the best IoU any predicted track of its class reaches.

    python twin_ap.py CKPT ROOT [SIDE]      # ROOT: a test split (eval-seeds cache); SIDE 224
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from avis.data import load_split
from avis.data.annotations import decode_track
from avis.engine.evaluation import subset_annotations
from avis.engine.seeds import twin_video_ids
from avis.eval import evaluate
from avis.inference.predictor import VideoPredictor
from avis.inference.results import video_records


def video_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def error_pixels(pred: np.ndarray, gt: np.ndarray, others: list[np.ndarray]) -> dict[str, int]:
    """The pixels a twin track's best prediction gets wrong (union - intersection), by frame
    kind: frames where the ground truth is empty (the track on while its twin is silent or
    hidden), where the prediction is empty (missed), and frames with both, split into pixels on
    the other twin (wrong twin / union) and the rest (mask shape)."""
    other = np.zeros_like(gt)
    for o in others:
        other |= o
    wrong = pred ^ gt  # (T, H, W)
    gt_on, pred_on = gt.any(axis=(1, 2)), pred.any(axis=(1, 2))  # (T,)
    both = gt_on & pred_on
    on_other = wrong & pred & other
    # frames with both where the track lies more on the other twin than on its own: a wrong twin
    own_px, other_px = (pred & gt).sum(axis=(1, 2)), on_other.sum(axis=(1, 2))  # (T,)
    wrong_twin = both & (other_px > own_px)
    return {
        "intersection": int((pred & gt).sum()),
        "gt empty": int(wrong[~gt_on].sum()),
        "pred empty": int(wrong[~pred_on & gt_on].sum()),
        "both: wrong-twin frames (all their wrong pixels)": int(wrong[wrong_twin].sum()),
        "both: other frames, on the other twin": int(on_other[both & ~wrong_twin].sum()),
        "both: other frames, the rest": int((wrong & ~(pred & other))[both & ~wrong_twin].sum()),
    }


def open_twin_split(argv: list[str]):
    """CKPT ROOT [SIDE] -> (ckpt, side, predictor without splitting at that test side, the
    split's raw test.json, the ids of its videos with twins, the loaded split)."""
    ckpt, root = argv[1], Path(argv[2])
    side = int(argv[3]) if len(argv) > 3 else 224
    torch.set_num_threads(1)
    p = VideoPredictor.from_checkpoint(ckpt, split_components=False)
    p.config = dataclasses.replace(p.config, test_short_side=side, test_max_size=2 * side)
    raw_gt = json.loads((root / "test.json").read_text(encoding="utf-8"))
    data = load_split(root, "test", spatial_audio=p.config.spatial_audio)
    return ckpt, side, p, raw_gt, twin_video_ids(raw_gt), data


def twin_predictions(p, data, twins):
    """Per video with twins, in id order: (video, scores (K,) float32, labels (K,), masks
    (K, T, H, W) bool, [(category id, (T, H, W) bool ground-truth track)])."""
    for video in sorted(data.videos, key=lambda v: v.id):
        if video.id not in twins:
            continue
        frames = data.load_frames(video)
        audio = data.load_audio_input(video).astype(np.float32)
        scores, labels, masks = (np.asarray(x) for x in p.predict_arrays(frames, audio))
        gts = [(t.category_id, decode_track(t)) for t in data.tracks[video.id]]
        yield video, scores.astype(np.float32), labels, masks, gts


def twin_tracks(labels, masks, gts, category_ids):
    """Per ground-truth twin track of a video: (category id, the IoUs of the predicted tracks
    of its class, `error_pixels` of the best of them)."""
    cats = [c for c, _ in gts]
    for c, g in gts:
        if cats.count(c) < 2:
            continue
        same = [k for k in range(len(labels)) if category_ids[labels[k]] == c]
        ious = [video_iou(masks[k], g) for k in same]
        pred = masks[same[int(np.argmax(ious))]] if same else np.zeros_like(g)
        yield c, ious, error_pixels(pred, g, [o for c2, o in gts if c2 == c and o is not g])


def main() -> None:
    ckpt, side, p, raw_gt, twins, data = open_twin_split(sys.argv)
    category_ids = [c["id"] for c in sorted(raw_gt["categories"], key=lambda c: c["id"])]
    runs: dict[str, list[dict]] = {"as is": [], "oracle scores": [], "no duplicates": []}
    lost: dict[str, int] = {}  # pixels of (union - intersection) of twin tracks, by kind
    best_per_gt: list[float] = []
    tracks_per_gt: list[float] = []
    for video, scores, labels, masks, gts in twin_predictions(p, data, twins):
        best = []  # per track: (IoU, gt index) of its best same-class GT
        for k in range(len(labels)):
            cands = [
                (video_iou(masks[k], g), j)
                for j, (c, g) in enumerate(gts)
                if c == category_ids[labels[k]]
            ]
            best.append(max(cands, default=(0.0, -1)))
        oracle = np.array([b[0] for b in best], dtype=np.float32)
        dedup = scores.copy()
        covered: dict[int, float] = {}
        for k in np.argsort(-scores, kind="stable"):
            value, j = best[k]
            if j >= 0 and covered.get(j, -1.0) >= value:
                dedup[k] = 0.001
            elif j >= 0:
                covered[j] = value
        for name, s in (("as is", scores), ("oracle scores", oracle), ("no duplicates", dedup)):
            runs[name] += video_records(video.id, s, labels, masks, category_ids)
        for c, ious, lost_here in twin_tracks(labels, masks, gts, category_ids):
            best_per_gt.append(max(ious, default=0.0))
            tracks_per_gt.append(len(ious) / sum(1 for c2, _ in gts if c2 == c))
            for key, value in lost_here.items():
                lost[key] = lost.get(key, 0) + value
    gt = subset_annotations(dict(raw_gt), twins)
    print(f"{ckpt} side {side}: {len(twins)} videos with twins, {len(best_per_gt)} twin tracks")
    for name, records in runs.items():
        result = evaluate(gt, records, protocol="fixed")
        m = result.metrics
        print(f"  {name:14s} mAP {m['AP_all']:.1f}  AP50 {result.extra['AP50']:.1f}  "
              f"AP75 {result.extra['AP75']:.1f}  AR {m['AR_all']:.1f}")  # fmt: skip
    b = np.array(best_per_gt)
    print(f"  twin tracks' best video IoU: mean {b.mean():.3f}, > 0.5 {np.mean(b > 0.5):.1%}, "
          f"> 0.75 {np.mean(b > 0.75):.1%}, > 0.9 {np.mean(b > 0.9):.1%}; "
          f"predicted tracks of the class per twin track {np.mean(tracks_per_gt):.2f}")  # fmt: skip
    inter = lost.pop("intersection")
    union = inter + sum(lost.values())
    print(f"  twin tracks' pooled IoU {inter / union:.3f}; of the union, wrong pixels: "
          + ", ".join(f"{k} {v / union:.1%}" for k, v in lost.items()))  # fmt: skip


if __name__ == "__main__":
    main()
