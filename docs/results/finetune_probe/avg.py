"""python avg.py OUT CKPT... : model file whose weights are the mean of the checkpoints' weights"""

import sys

import torch

out, srcs = sys.argv[1], sys.argv[2:]
objs = [torch.load(s, map_location="cpu", weights_only=True) for s in srcs]
keep = {
    k: objs[0][k] for k in ("format", "version", "config", "model", "class_names", "audio_features")
}
avg = {}
for k, v in objs[0]["model"].items():
    if v.is_floating_point():
        avg[k] = sum(o["model"][k].double() for o in objs).div(len(objs)).to(v.dtype)
    else:
        avg[k] = v
keep["model"] = avg
torch.save(keep, out)
