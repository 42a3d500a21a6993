"""How well does the spatial map tell twins apart? For each twin pair (two GT tracks of one class
both annotated in frames t and t+1): the band profile at each twin's column in frame t, compared
with both twins' profiles in frame t+1. Accuracy = share of steps where the same twin is closer."""
import sys
import numpy as np
from avis.data import load_split

root = sys.argv[1]
split = load_split(root, "train", spatial_audio=True)
ok = tot = 0
dist_ok = 0
for video in split.videos[:300]:
    tracks = split.tracks[video.id]
    cats = [t.category_id for t in tracks]
    for c in set(cats):
        pair = [t for t in tracks if t.category_id == c]
        if len(pair) != 2:
            continue
        maps = split.load_spatial(video)  # (T, B, P)
        P = maps.shape[-1]
        def col(track, t):
            m = track.mask(t)
            xs = np.nonzero(m)[1]
            u = (xs.mean() + 0.5) / m.shape[1] * P - 0.5
            lo = int(np.clip(np.floor(u), 0, P - 1)); hi = min(lo + 1, P - 1); w = np.clip(u - lo, 0, 1)
            return maps[t][:, lo] * (1 - w) + maps[t][:, hi] * w, xs.mean() / m.shape[1]
        for t in range(video.length - 1):
            if all(tr.segmentations[t] is not None and tr.segmentations[t + 1] is not None for tr in pair):
                (a0, xa), (b0, xb) = col(pair[0], t), col(pair[1], t)
                (a1, _), (b1, _) = col(pair[0], t + 1), col(pair[1], t + 1)
                d = lambda u, v: np.linalg.norm(u - v)
                same = d(a0, a1) + d(b0, b1)
                swap = d(a0, b1) + d(b0, a1)
                ok += same < swap
                tot += 1
                # control: does the profile differ at all between the twins' columns?
                dist_ok += d(a0, b0) > 0.5
print(f"steps {tot}: same twin closer in {ok / tot:.3f}; twins' columns differ (>0.5) in {dist_ok / tot:.3f}")
