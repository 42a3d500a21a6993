"""Component splitting (docs/predict.md) on one split: metrics without it and for a grid of
its two settings, overall and on the videos with / without twins (two tracks of one class).

    python docs/results/tiny_r5/split_sweep.py CHECKPOINT [ROOT] [SPLIT]

Predicts once with splitting off (the checkpoint's other inference settings as stored), then
splits the predicted tracks for every setting and scores the records (fixed protocol, and
the official one for the chosen setting).
"""

import json
import sys
from pathlib import Path

from avis.engine.evaluation import SplitEvaluator, subset_annotations
from avis.eval import load_ground_truth
from avis.inference.components import SplitOptions, split_track
from avis.models.checkpoint import load_model, read_checkpoint

CHOSEN = SplitOptions()  # the defaults, chosen on val with this script


def split_records(records: list[dict], options: SplitOptions) -> list[dict]:
    return [
        {**r, "segmentations": part}
        for r in records
        for part in split_track(r["segmentations"], options)
    ]


def shown(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def main() -> None:
    ckpt = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else "data/synth"
    split = sys.argv[3] if len(sys.argv) > 3 else "val"
    model, cfg = load_model(ckpt)
    cfg.split_components = False
    evaluator = SplitEvaluator(root, split, cfg, list(read_checkpoint(ckpt)["class_names"]))
    records = evaluator.predict_records(model)
    print(f"{split}, no splitting ({len(records)} tracks): {shown(evaluator.score(records))}")
    for fraction in (0.1, 0.2, 0.3):
        for share in (0.1, 0.25, 0.5):
            options = SplitOptions(fraction, share)
            out = split_records(records, options)
            metrics = evaluator.score(out) if options == CHOSEN else {
                k: v for k, v in evaluator.score(out).items() if "official" not in k
            }  # fmt: skip
            print(f"min_blob_fraction {fraction} min_frame_share {share} ({len(out)} tracks): {shown(metrics)}")
    raw = json.loads((Path(root) / f"{split}.json").read_text())
    twins = set()
    for video in evaluator.videos:
        classes = [t.category_id for t in evaluator.data.tracks[video.id]]
        if len(classes) > len(set(classes)):
            twins.add(video.id)
    chosen = split_records(records, CHOSEN)
    for name, ids in (("with twins", twins), ("without twins", {v.id for v in evaluator.videos} - twins)):
        evaluator.gt = load_ground_truth(subset_annotations(raw, ids))
        for tag, recs in (("no splitting", records), ("split (defaults)", chosen)):
            subset = [r for r in recs if r["video_id"] in ids]
            print(f"{len(ids)} videos {name}, {tag}: {shown(evaluator.score(subset))}")


if __name__ == "__main__":
    main()
