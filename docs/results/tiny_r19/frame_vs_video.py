"""Per both-sounding twin frame: does the frame level (last frame-decoder layer) have two
twin-class queries (prob>0.5) each IoU>0.5 with a different twin? And the video level
(whole-video decode, per frame mask)?  python frame_vs_video.py CKPT SIDE [ROOT] [SPLIT]"""
import dataclasses
import sys

import numpy as np
import torch
import torch.nn.functional as F

from avis.data import load_split
from avis.data.masks import decode_segmentation
from avis.inference.predictor import VideoPredictor
from avis.models.video_module import video_masks

torch.set_num_threads(2)
ckpt, size = sys.argv[1], int(sys.argv[2])
root = sys.argv[3] if len(sys.argv) > 3 else "data/synth"
split = sys.argv[4] if len(sys.argv) > 4 else "val"
p = VideoPredictor.from_checkpoint(ckpt, split_components=False)
p.config = dataclasses.replace(p.config, test_short_side=size, test_max_size=2 * size)
data = load_split(root, split)
def up(m, input_size, h, w):
    hm, wm = m.shape[-2:]
    m = F.interpolate(m, size=(hm * 4, wm * 4), mode="bilinear", align_corners=False)[..., : input_size[0], : input_size[1]]
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) > 0
def sep_count(masks, gts):  # masks (q, n, h, w) bool, gts [(n,h,w)]*2 ; per frame separated?
    inter = torch.stack([(masks & g[None]).flatten(2).sum(-1) for g in gts], -1).float()  # q,n,2
    uni = torch.stack([(masks | g[None]).flatten(2).sum(-1) for g in gts], -1).float()
    good = inter / uni.clamp(min=1) > 0.5  # q,n,2
    a, b = good[..., 0], good[..., 1]  # q,n
    q = masks.shape[0]
    res = []
    for t in range(masks.shape[1]):
        res.append(any(a[x, t] and b[y, t] for x in range(q) for y in range(q) if x != y))
    return res
tot = fs = vs = 0
with torch.no_grad():
    for video in sorted(data.videos, key=lambda v: v.id):
        tracks = data.tracks[video.id]
        cats = [t.category_id for t in tracks]
        pairs = [(c, *[t for t in tracks if t.category_id == c]) for c in sorted(set(cats)) if cats.count(c) == 2]
        if not pairs:
            continue
        frames, audio = data.load_frames(video), torch.from_numpy(data.load_audio(video).astype(np.float32))
        h, w = frames.shape[1:3]
        encode, input_size, padded = p.encoder(frames, audio)
        enc = encode(0, len(frames), True)
        out = p.model.decode_video(enc.frame_queries, audio)
        for c, a, b in pairs:
            both = [t for t in range(len(frames)) if a.segmentations[t] is not None and b.segmentations[t] is not None]
            if not both:
                continue
            idx = torch.tensor(both)
            gts = [torch.from_numpy(np.stack([decode_segmentation(t.segmentations[i], h, w).astype(bool) for i in both])) for t in (a, b)]
            # frame level
            fl = enc.frame.pred_logits[-1][idx].softmax(-1)[..., c - 1]  # n,fQ
            fm = enc.frame.pred_masks[-1][idx]  # n,fQ,Hm,Wm
            fmask = up(fm, input_size, h, w)  # n,fQ,h,w
            fmask = fmask & (fl > 0.5)[..., None, None]
            fsep = sep_count(fmask.transpose(0, 1), gts)
            # video level
            probs = out.pred_logits[-1, 0, 0].softmax(-1)[:, c - 1]
            qs = (probs > 0.5).nonzero().flatten().tolist()
            if qs:
                emb = out.pred_mask_embed[-1, 0, 0][qs]
                m = video_masks(emb[None], enc.mask_features[None], emb.dim() == 3)[0][:, idx]
                vsep = sep_count(up(m, input_size, h, w), gts)
            else:
                vsep = [False] * len(both)
            tot += len(both)
            fs += sum(fsep)
            vs += sum(vsep)
print(f"{ckpt} {size}px {split}: {tot} both-sounding twin frames; frame level separates {fs} ({fs/tot:.0%}); video level {vs} ({vs/tot:.0%})")
