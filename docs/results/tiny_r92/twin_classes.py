"""Twin errors by class: which classes' look-alike pairs the network fails to keep apart.

Per class that appears as twins in a test split's videos (splitting off, as `twin_ap.py`):
the number of twin tracks, their mean best whole-video IoU with a predicted track of the
class, the share above 0.75, and the share of the twin tracks' pooled union that lies in
frames where the best track covers the other twin more than its own (wrong-twin frames).

    python twin_classes.py CKPT ROOT [SIDE]     # ROOT: a test split (eval-seeds cache)
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiny_r69"))
from twin_ap import open_twin_split, twin_predictions, twin_tracks  # noqa: E402

WRONG_TWIN = "both: wrong-twin frames (all their wrong pixels)"


def main() -> None:
    ckpt, side, p, raw_gt, twins, data = open_twin_split(sys.argv)
    names = {c["id"]: c["name"] for c in raw_gt["categories"]}
    category_ids = [c["id"] for c in sorted(raw_gt["categories"], key=lambda c: c["id"])]
    per: dict[int, dict[str, list[float]]] = {}
    for _, _, labels, masks, gts in twin_predictions(p, data, twins):
        for c, ious, lost in twin_tracks(labels, masks, gts, category_ids):
            union = lost["intersection"] + sum(v for k, v in lost.items() if k != "intersection")
            row = per.setdefault(c, {"iou": [], "wrong": [], "union": []})
            row["iou"].append(max(ious, default=0.0))
            row["wrong"].append(lost[WRONG_TWIN])
            row["union"].append(union)
    print(f"{ckpt} side {side}: twin tracks by class")
    print(f"  {'class':8s} {'tracks':>6s} {'best IoU':>8s} {'> 0.75':>7s} {'wrong-twin share':>16s}")
    for c in sorted(per, key=lambda c: np.mean(per[c]["iou"])):
        row = per[c]
        iou = np.array(row["iou"])
        share = sum(row["wrong"]) / max(sum(row["union"]), 1)
        print(f"  {names[c]:8s} {len(iou):6d} {iou.mean():8.3f} {np.mean(iou > 0.75):7.1%} {share:16.1%}")


if __name__ == "__main__":
    main()
