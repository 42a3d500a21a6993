"""FSLA / HOTA / mAP (fixed protocol) of a checkpoint on the videos with and without twins.

    python docs/results/tiny_r8/twin_split_metrics.py CHECKPOINT [ROOT] [SPLIT]

Twins: two instance tracks of one class in a video (the synthetic benchmark's twins sound
together). The model config stored in the checkpoint is used as is (test size included).
"""

import json
import sys
from pathlib import Path

from avis.engine.evaluation import SplitEvaluator, subset_annotations
from avis.eval import load_ground_truth
from avis.models.checkpoint import load_model, read_checkpoint


def main() -> None:
    ckpt = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else "data/synth"
    split = sys.argv[3] if len(sys.argv) > 3 else "val"
    model, cfg = load_model(ckpt)
    evaluator = SplitEvaluator(root, split, cfg, list(read_checkpoint(ckpt)["class_names"]))
    raw = json.loads((Path(root) / f"{split}.json").read_text())

    def has_twins(video) -> bool:
        cats = [t.category_id for t in evaluator.data.tracks[video.id]]
        return len(cats) > len(set(cats))

    videos = list(evaluator.videos)
    for name, keep in (("without twins", False), ("with twins", True)):
        chosen = [v for v in videos if has_twins(v) == keep]
        evaluator.videos = chosen
        evaluator.gt = load_ground_truth(subset_annotations(raw, {v.id for v in chosen}))
        metrics = evaluator(model)
        shown = "  ".join(f"{k} {metrics[k]:.2f}" for k in ("FSLA", "HOTA", "mAP"))
        print(f"{len(chosen)} videos {name}: {shown}")


if __name__ == "__main__":
    main()
