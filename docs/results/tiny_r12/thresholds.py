"""FSLA / HOTA / mAP of a checkpoint at several score thresholds, from one prediction pass.

    python docs/results/tiny_r12/thresholds.py CHECKPOINT [ROOT] [SPLIT] [THRESHOLDS...]

Predicts the split once with score threshold 0 (every candidate above 0 kept, with its
score), then scores the records whose score is above each threshold. The same numbers as
evaluating with `model.score_threshold=<t>` (a record is kept iff its final score > t).
"""

import sys
from dataclasses import replace

from avis.engine.evaluation import SplitEvaluator
from avis.models.checkpoint import load_model, read_checkpoint


def main() -> None:
    ckpt = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else "data/synth"
    split = sys.argv[3] if len(sys.argv) > 3 else "val"
    thresholds = [float(t) for t in sys.argv[4:]] or [0.3, 0.4, 0.5, 0.6]
    model, cfg = load_model(ckpt)
    names = list(read_checkpoint(ckpt)["class_names"])
    evaluator = SplitEvaluator(root, split, replace(cfg, score_threshold=0.0), names)
    records = evaluator.predict_records(model)
    for threshold in thresholds:
        kept = [r for r in records if r["score"] > threshold]
        metrics = evaluator.score(kept)
        shown = "  ".join(f"{k} {metrics[k]:.2f}" for k in ("FSLA", "HOTA", "mAP"))
        print(f"score > {threshold:.2f}: {len(kept)} tracks  {shown}", flush=True)


if __name__ == "__main__":
    main()
