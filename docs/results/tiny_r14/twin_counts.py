"""Twin separation counts: frame level (both-sounding frames with >= 2 frame queries of the
twin class above 0.5) and video level (5-frame both-sounding clips with >= 2 such video queries)."""
import dataclasses
import sys
from pathlib import Path

import torch

from avis.data import load_split
from avis.inference.predictor import VideoPredictor

sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r8"))
from twins import twin_pairs  # noqa: E402  (docs/results/tiny_r8/twins.py)

ckpt, size = sys.argv[1], int(sys.argv[2])
root = sys.argv[3] if len(sys.argv) > 3 else "data/synth"
split = sys.argv[4] if len(sys.argv) > 4 else "val"
p = VideoPredictor.from_checkpoint(ckpt)
p.config = dataclasses.replace(p.config, test_short_side=size, test_max_size=2 * size)
data = load_split(root, split)
ft = fs = vt = vs = 0
with torch.no_grad():
    for video, pairs in twin_pairs(data):
        frames, audio = data.load_frames(video), torch.from_numpy(data.load_audio(video))
        encode = p.encoder(frames, audio)[0]
        enc = encode(0, len(frames), True)
        fprobs = enc.frame.pred_logits[-1].softmax(-1)  # (T, fQ, K+1)
        for c, a, b in pairs:
            both = [t for t in range(len(frames)) if a.segmentations[t] is not None and b.segmentations[t] is not None]
            for t in both:
                ft += 1
                fs += int((fprobs[t, :, c - 1] > 0.5).sum() >= 2)
            for s in range(0, len(both) - 4, 5):
                idx = torch.tensor(both[s:s + 5])
                if idx[-1] - idx[0] > 20:
                    continue
                out = p.model.decode_video(enc.frame_queries[idx], audio[idx])
                probs = out.pred_logits[-1, 0, 0].softmax(-1)[:, c - 1]
                vt += 1
                vs += int((probs > 0.5).sum() >= 2)
print(f"{size}px frame level {fs}/{ft} = {fs/max(ft,1):.1%}; video clips {vs}/{vt} = {vs/max(vt,1):.1%}")
