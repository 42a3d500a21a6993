"""When a track is on the wrong twin, did its embedding change or did the features?

A track's video mask in frame t is e_t . F_t (per-frame embedding e_t, video mask features F_t).
For each pair of twins (two ground-truth tracks of one class) of a test split's videos, the two
video queries with the highest probability of that class are the pair's tracks. In each frame
where both twins have pixels on the mask grid, d_t = mean F_t over twin A's pixels - mean over
twin B's, and the track's margin m_t = e_t . d_t says which twin it prefers there. A track's
twin is the sign its margins have in most of those frames; frames with the other sign are its
wrong-twin frames (a jump). For each wrong-twin frame two counterfactual margins:
- fixed embedding: e_bar . d_t with e_bar the mean of the track's embeddings over its right
  frames: still wrong means the features changed which twin looks like the track;
- fixed features: e_t . d_bar with d_bar the mean of d over the track's right frames: wrong
  means the embedding itself turned to the other twin (the per-frame re-read picked it).

    python twin_jumps.py CKPT ROOT [SIDE]      # ROOT: a test split (eval-seeds cache); SIDE 224
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r69"))
sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r77"))
from twin_ap import open_twin_split  # noqa: E402  (docs/results/tiny_r69/twin_ap.py)
from twin_features import decoded_twin_videos, twin_pairs  # noqa: E402  (docs/results/tiny_r77/twin_features.py)


def main() -> None:
    ckpt, side, p, _, twins, data = open_twin_split(sys.argv)
    counts = {"frames": 0, "wrong": 0}
    table = np.zeros((2, 2), dtype=int)  # [fixed embedding right?][fixed features right?]
    tracks_with_jumps = tracks = 0
    for num_frames, gts, feats, probs, embed, (hq, wq) in decoded_twin_videos(p, data, twins):
        for c, small, both in twin_pairs(gts, num_frames, hq, wq):
            d = torch.stack([feats[t][:, small[0][t]].mean(1) - feats[t][:, small[1][t]].mean(1) for t in both])
            label = c - 1  # class index of dataset id c (the synthetic sets number them 1..K)
            for q in probs[:, label].topk(2).indices.tolist():
                e = embed[q, both]  # (n, Cm)
                margin = (e * d).sum(1)
                sign = 1.0 if (margin > 0).float().mean() >= 0.5 else -1.0
                right = margin * sign > 0
                tracks += 1
                counts["frames"] += len(both)
                wrong = (~right).nonzero().flatten().tolist()
                if not wrong:
                    continue
                tracks_with_jumps += 1
                counts["wrong"] += len(wrong)
                e_bar, d_bar = e[right].mean(0), d[right].mean(0)
                for t in wrong:
                    fixed_embed_right = float(e_bar @ d[t]) * sign > 0
                    fixed_feat_right = float(e[t] @ d_bar) * sign > 0
                    table[int(fixed_embed_right), int(fixed_feat_right)] += 1
    n = max(counts["wrong"], 1)
    print(f"{ckpt} side {side}: {tracks} twin tracks (2 per pair), {counts['frames']} track-frames "
          f"with both twins on the grid; {tracks_with_jumps} tracks with a wrong-twin frame")
    print(f"  wrong-twin track-frames: {counts['wrong']} ({counts['wrong'] / max(counts['frames'], 1):.1%})")
    print(f"  a fixed embedding would be right (the embedding changed):        {table[1].sum() / n:.1%}")
    print(f"  fixed features would be right (the features changed):           {table[:, 1].sum() / n:.1%}")
    print("  [fixed embedding right, fixed features right]: "
          f"both {table[1, 1] / n:.1%}, embedding only {table[1, 0] / n:.1%}, "
          f"features only {table[0, 1] / n:.1%}, neither {table[0, 0] / n:.1%}")


if __name__ == "__main__":
    main()
