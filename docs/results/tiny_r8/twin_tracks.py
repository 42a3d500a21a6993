"""Every predicted track of a twin class (score threshold 0): its score and IoU with each twin.

    python docs/results/tiny_r8/twin_tracks.py CHECKPOINT [ROOT] [SPLIT]

One line per twin pair: the four highest-scoring tracks of that class, `s` = score,
`A` / `B` = spatio-temporal mask IoU with the two twins (frames where neither is present
are skipped; a frame where only one side has a mask counts for the union).
"""

import sys
from pathlib import Path

import torch
from pycocotools import mask as mask_utils

from avis.data import load_split
from avis.inference.predictor import VideoPredictor

sys.path.insert(0, str(Path(__file__).parent))
from twins import twin_pairs  # noqa: E402


def track_iou(rles, track, num_frames: int) -> float:
    inter = union = 0
    for t in range(num_frames):
        pred = mask_utils.decode(rles[t]).astype(bool)
        gt = track.mask(t) if track.segmentations[t] is not None else None
        if gt is None:
            union += int(pred.sum())
            continue
        inter += int((pred & gt).sum())
        union += int((pred | gt).sum())
    return inter / max(union, 1)


def main() -> None:
    ckpt = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else "data/synth"
    split = sys.argv[3] if len(sys.argv) > 3 else "val"
    predictor = VideoPredictor.from_checkpoint(ckpt, threshold=0.0)
    data = load_split(root, split)
    with torch.no_grad():
        for video, pairs in twin_pairs(data):
            frames, audio = data.load_frames(video), data.load_audio(video)
            pred = predictor.predict((frames, audio))
            for c, a, b in pairs:
                rows = sorted(
                    (
                        (float(pred.scores[i]), track_iou(pred.rles[i], a, len(frames)),
                         track_iou(pred.rles[i], b, len(frames)))
                        for i in range(pred.num_instances)
                        if pred.labels[i] == c - 1
                    ),
                    reverse=True,
                )  # fmt: skip
                shown = " | ".join(f"s={s:.2f} A={x:.2f} B={y:.2f}" for s, x, y in rows[:4])
                print(f"video {video.id} class {c}: {shown}")


if __name__ == "__main__":
    main()
