"""Clip-level twin separation: 5-frame both-sounding clips where two video queries of the twin
class (prob > 0.5) each have IoU > 0.5 (over the clip) with a different twin.
python docs/results/tiny_r15/twin_clip_pairs.py CKPT SIDE [ROOT] [SPLIT]"""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avis.data import load_split
from avis.data.masks import decode_segmentation
from avis.inference.predictor import VideoPredictor

sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r8"))
from twins import twin_pairs  # noqa: E402  (docs/results/tiny_r8/twins.py)

from avis.models.video_module import video_masks

ckpt, size = sys.argv[1], int(sys.argv[2])
root = sys.argv[3] if len(sys.argv) > 3 else "data/synth"
split = sys.argv[4] if len(sys.argv) > 4 else "val"
p = VideoPredictor.from_checkpoint(ckpt, split_components=False)
p.config = dataclasses.replace(p.config, test_short_side=size, test_max_size=2 * size)
data = load_split(root, split)
total = conf2 = sep = union = 0
with torch.no_grad():
    for video, pairs in twin_pairs(data):
        frames, audio = data.load_frames(video), torch.from_numpy(data.load_audio(video).astype(np.float32))
        h, w = frames.shape[1:3]
        encode, input_size, padded = p.encoder(frames, audio)
        enc = encode(0, len(frames), True)
        for c, a, b in pairs:
            both = [t for t in range(len(frames)) if a.segmentations[t] is not None and b.segmentations[t] is not None]
            for s in range(0, len(both) - 4, 5):
                idx = torch.tensor(both[s:s + 5])
                if idx[-1] - idx[0] > 20:
                    continue
                out = p.model.decode_video(enc.frame_queries[idx], audio[idx])
                probs = out.pred_logits[-1, 0, 0].softmax(-1)[:, c - 1]
                qs = (probs > 0.5).nonzero().flatten().tolist()
                total += 1
                conf2 += int(len(qs) >= 2)
                if not qs:
                    continue
                emb = out.pred_mask_embed[-1, 0, 0][qs]  # (q, Cm) or (q, 5, Cm)
                per_frame = emb.dim() == 3
                m = video_masks(emb[None], enc.mask_features[idx][None], per_frame)[0]  # (q, 5, Hm, Wm)
                hm, wm = m.shape[-2:]
                m = F.interpolate(m, size=(hm * 4, wm * 4), mode="bilinear", align_corners=False)
                m = m[..., : input_size[0], : input_size[1]]
                m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) > 0
                gts = [torch.from_numpy(np.stack([decode_segmentation(t.segmentations[i], h, w).astype(bool) for i in idx.tolist()])) for t in (a, b)]
                iou = torch.tensor([[float((mi & g).sum()) / max(float((mi | g).sum()), 1.0) for g in gts] for mi in m])
                good = iou > 0.5
                sep += int(any(good[x, 0] and good[y, 1] for x in range(len(qs)) for y in range(len(qs)) if x != y))
                uni = ((m & gts[0]).flatten(1).sum(1) > 0.3 * gts[0].sum()) & ((m & gts[1]).flatten(1).sum(1) > 0.3 * gts[1].sum())
                union += int(uni.any())
print(f"{ckpt} {size}px: {total} clips; two confident {conf2}; two separate tracks {sep} ({sep/max(total,1):.0%}); a track covering both {union}")
