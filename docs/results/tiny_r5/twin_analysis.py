"""Twin analysis: how often does the model separate two same-class instances that sound together?

    python docs/results/tiny_r5/twin_analysis.py CHECKPOINT [SHORT_SIDE] [ROOT] [SPLIT]

Frame level: in every frame where both twins sound, count the frame queries of the twin class
with class probability > 0.5 (the frame decoder's own predictions); >= 2 = separated, bucketed
by the twins' centroid distance (pixels of the 128 px frame). Video level: for each twin pair,
the kept tracks (score > the model's threshold) of that class and the best IoU of each twin.
"""

import dataclasses
import sys

import numpy as np
import torch

from avis.data import load_split
from avis.inference.predictor import VideoPredictor


def main() -> None:
    ckpt = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    root = sys.argv[3] if len(sys.argv) > 3 else "data/synth"
    split = sys.argv[4] if len(sys.argv) > 4 else "val"
    predictor = VideoPredictor.from_checkpoint(ckpt)
    if size:
        predictor.config = dataclasses.replace(
            predictor.config, test_short_side=size, test_max_size=2 * size
        )
    data = load_split(root, split)
    both = separated = pairs = pairs_split = 0
    distances = []
    with torch.no_grad():
        for video in sorted(data.videos, key=lambda v: v.id):
            tracks = data.tracks[video.id]
            cats = [t.category_id for t in tracks]
            twins = [c for c in sorted(set(cats)) if cats.count(c) == 2]
            if not twins:
                continue
            frames, audio = data.load_frames(video), data.load_audio(video)
            encode = predictor._encoder(frames, torch.from_numpy(audio))[0]
            probs = encode(0, len(frames), True).frame.pred_logits[-1].softmax(-1)
            prediction = predictor.predict((frames, audio))
            labels = prediction.labels.tolist()
            for c in twins:
                a, b = (t for t in tracks if t.category_id == c)
                for t in range(len(frames)):
                    if a.segmentations[t] is None or b.segmentations[t] is None:
                        continue
                    both += 1
                    found = int((probs[t, :, c - 1] > 0.5).sum()) >= 2
                    separated += found
                    ya, xa = np.nonzero(a.mask(t))
                    yb, xb = np.nonzero(b.mask(t))
                    distances.append((np.hypot(ya.mean() - yb.mean(), xa.mean() - xb.mean()), found))
                pairs += 1
                pairs_split += sum(1 for k in labels if k == c - 1) >= 2
    print(f"frame level: {both} frames with both twins sounding, separated in {separated} "
          f"({separated / max(both, 1):.1%})")
    d = np.array(distances)
    for lo, hi in ((0, 20), (20, 35), (35, 50), (50, 1000)):
        s = (d[:, 0] >= lo) & (d[:, 0] < hi)
        if s.any():
            print(f"  centroid distance {lo}-{hi} px: {int(s.sum())} frames, separated {d[s, 1].mean():.1%}")
    print(f"video level: {pairs} twin pairs, >= 2 kept tracks of the class in {pairs_split}")


if __name__ == "__main__":
    main()
