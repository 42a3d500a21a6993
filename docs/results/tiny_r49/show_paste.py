"""Draw four training clips of the tiny recipe with a pasted twin (twin_paste_prob=1).

Usage: python show_paste.py DATA_ROOT OUT.png. Each row: the clip's two frames, then the same
frames with the pasted copy's mask in red.
"""

import sys

import numpy as np
from PIL import Image

from avis.engine.build import build_train_dataset
from avis.engine.config import tiny_recipe

cfg = tiny_recipe()
cfg.data.root, cfg.data.twin_paste_prob = sys.argv[1], 1.0
dataset, _ = build_train_dataset(cfg)
rows = []
for index in range(4):
    clip = dataset.sample(index, 0)
    frames = clip.frames.permute(0, 2, 3, 1).numpy().astype(np.uint8)  # (T, h, w, 3)
    marked = frames.copy()
    marked[..., 0] = np.where(clip.masks[-1].numpy(), 255, marked[..., 0])  # the copy: last row
    rows.append(np.concatenate([*frames, *marked], 1))
width = min(row.shape[1] for row in rows)
Image.fromarray(np.concatenate([row[:, :width] for row in rows], 0)).save(sys.argv[2])
