"""Whole-video twin separation: twin pairs (both sounding in >= 1 frame) for which two kept
tracks of the class each have spatio-temporal IoU > 0.5 with a different twin (split off).
python docs/results/tiny_r14/twin_pairs.py CKPT SIDE [ROOT] [SPLIT] [VIDEOS]"""
import dataclasses
import sys
from pathlib import Path

import numpy as np

from avis.data import load_split
from avis.data.masks import decode_segmentation
from avis.inference.predictor import VideoPredictor

sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r8"))
from twins import twin_pairs  # noqa: E402  (docs/results/tiny_r8/twins.py)

ckpt, size = sys.argv[1], int(sys.argv[2])
root = sys.argv[3] if len(sys.argv) > 3 else "data/synth"
split = sys.argv[4] if len(sys.argv) > 4 else "val"
limit = int(sys.argv[5]) if len(sys.argv) > 5 else 10**9
p = VideoPredictor.from_checkpoint(ckpt, split_components=False)
p.config = dataclasses.replace(p.config, test_short_side=size, test_max_size=2 * size)
data = load_split(root, split)
total = sep = one = 0
for done, (video, pairs) in enumerate(twin_pairs(data), 1):
    if done > limit:
        break
    frames, audio = data.load_frames(video), data.load_audio(video).astype(np.float32)
    pred = p.predict((frames, audio))
    masks = pred.masks().numpy() if hasattr(pred.masks(), "numpy") else np.asarray(pred.masks())
    labels = np.asarray(pred.labels)
    h, w = frames.shape[1:3]
    for c, a, b in pairs:
        total += 1
        gts = []
        for t in (a, b):
            gts.append(np.stack([decode_segmentation(s, h, w).astype(bool) if s is not None else np.zeros((h, w), bool) for s in t.segmentations]))
        cands = [i for i in range(len(labels)) if labels[i] == c - 1]
        ious = np.zeros((len(cands), 2))
        for k, i in enumerate(cands):
            for j, g in enumerate(gts):
                ious[k, j] = (masks[i] & g).sum() / max((masks[i] | g).sum(), 1)
        good = ious > 0.5
        two = any(good[x, 0] and good[y, 1] for x in range(len(cands)) for y in range(len(cands)) if x != y)
        sep += int(two)
        one += int(good.any())
print(f"{ckpt} {size}px: {total} twin pairs; two separate tracks in {sep} ({sep/max(total,1):.0%}); >= one twin found in {one}")
