"""Error analysis of a results file on a synthetic split (used for the numbers in README.md).

    python docs/results/tiny_r3/error_analysis.py RESULTS.json SPLIT THRESHOLD [ROOT]

RESULTS.json: AVISeg result records (e.g. from one prediction at threshold 0); records
scoring at most THRESHOLD are dropped. For every GT track: the best same-class predicted
track by spatio-temporal IoU, missed tracks, merges (the best prediction also covers > 30 %
of another same-class GT track), per-frame on/off agreement, AP50/AP75.
"""

import json
import sys
from pathlib import Path

import numpy as np

from avis.data import load_split
from avis.eval import evaluate, load_ground_truth
from avis.inference.results import decode_rle


def main() -> None:
    path, split, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    root = sys.argv[4] if len(sys.argv) > 4 else "data/synth"
    records = [r for r in json.loads(Path(path).read_text()) if r["score"] > threshold]
    ground_truth = load_ground_truth(json.loads(Path(f"{root}/{split}.json").read_text()))
    result = evaluate(ground_truth, records, protocol="fixed")
    print({k: round(v, 2) for k, v in result.metrics.items() if isinstance(v, float)})
    data = load_split(root, split)
    missed = merged = total = 0
    ious, agreement = [], []
    for video in sorted(data.videos, key=lambda v: v.id):
        preds = [r for r in records if r["video_id"] == video.id]
        pred_masks = [np.stack([decode_rle(s) for s in r["segmentations"]]) for r in preds]
        tracks = data.tracks[video.id]
        empty = np.zeros((video.height, video.width), bool)
        gts = [
            np.stack([tr.mask(t) if tr.segmentations[t] is not None else empty for t in range(video.length)])
            for tr in tracks
        ]
        for track, gt in zip(tracks, gts):
            total += 1
            best, best_index = 0.0, -1
            for i, (record, pred) in enumerate(zip(preds, pred_masks)):
                if record["category_id"] == track.category_id:
                    iou = (pred & gt).sum() / max((pred | gt).sum(), 1)
                    if iou > best:
                        best, best_index = iou, i
            ious.append(best)
            if best_index < 0:
                missed += 1
                continue
            pred = pred_masks[best_index]
            on_pred, on_gt = pred.reshape(len(pred), -1).any(1), gt.reshape(len(gt), -1).any(1)
            agreement.append((on_pred == on_gt).mean())
            others = [g for t, g in zip(tracks, gts) if t is not track and t.category_id == track.category_id]
            merged += any((pred & g).sum() > 0.3 * g.sum() for g in others if g.sum())
    ious = np.array(ious)
    print(f"GT tracks {total}, missed {missed}, merged {merged}; best IoU mean {ious.mean():.3f}, "
          f"> 0.5 {(ious > 0.5).mean():.3f}, > 0.75 {(ious > 0.75).mean():.3f}, > 0.9 {(ious > 0.9).mean():.3f}; "
          f"on/off agreement {np.mean(agreement):.3f}")


if __name__ == "__main__":
    main()
