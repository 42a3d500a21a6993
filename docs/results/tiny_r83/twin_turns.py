"""In which frames do a model's twin differences turn and its twin tracks jump?

For each pair of twins (two ground-truth tracks of one class) of a test split's videos and each
frame where both have pixels on the mask grid (as twin_features.py / twin_jumps.py):
- the features turn in a frame when d_t (twin A's mean mask feature - twin B's) points against
  the mean of the pair's other frames' d (leave one out, twin_features.py);
- a track is on the wrong twin in a frame when its margin e_t . d_t has the sign it has in the
  minority of the pair's frames (twin_jumps.py; the pair's two tracks are the two video queries
  with the highest probability of the class).
Each rate is split by properties of the frame, all from the ground truth:
- occluded: a twin's area on the grid is under 0.6 x its median over the pair's frames (hidden
  by another object, or partly outside the picture);
- area ratio moved: |log(area A / area B)| differs from its median over the frames by > 0.5;
- sides swapped: A's mask centroid is on the other side of B's (left/right) than in most frames;
- directions swapped: the A - B centroid vector points against the mean of the other frames';
- close: centroids within 0.25 of the grid's side; touching: A's mask grown by one cell meets B;
- first/last 2: the pair's first two or last two such frames.

    python twin_turns.py CKPT ROOT [SIDE]      # ROOT: a test split (eval-seeds cache); SIDE 224
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r69"))
sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r77"))
from twin_ap import open_twin_split  # noqa: E402  (docs/results/tiny_r69/twin_ap.py)
from twin_features import decoded_twin_videos, loo_agreement, twin_pairs  # noqa: E402

OCCLUDED = 0.6  # area under this share of its median
RATIO_MOVE = 0.5  # |log area ratio - its median| above this
CLOSE = 0.25  # centroid distance, as a share of the grid's longer side


def frame_properties(small: list, both: list[int], hq: int, wq: int) -> dict[str, np.ndarray]:
    """Per frame of ``both`` (n,), bool: the properties of the module docstring."""
    ys, xs = torch.arange(hq, dtype=torch.float32), torch.arange(wq, dtype=torch.float32)

    def centroid(m):
        m = m.float()
        return float((m.sum(0) * xs).sum() / m.sum()), float((m.sum(1) * ys).sum() / m.sum())

    ca = np.array([centroid(small[0][t]) for t in both])  # (n, 2) x, y
    cb = np.array([centroid(small[1][t]) for t in both])
    area = np.array([[small[i][t].sum().item() for t in both] for i in range(2)], dtype=float)  # (2, n)
    left = ca[:, 0] < cb[:, 0]
    rel = ca - cb
    others = (rel.sum(0, keepdims=True) - rel) / max(len(rel) - 1, 1)
    log_ratio = np.log(area[0] / area[1])
    touching = [
        bool((F.max_pool2d(small[0][t].float()[None, None], 3, 1, 1)[0, 0] > 0).logical_and(small[1][t]).any())
        for t in both
    ]
    position = np.arange(len(both))
    return {
        "occluded": (area < OCCLUDED * np.median(area, axis=1, keepdims=True)).any(0),
        "area ratio moved": np.abs(log_ratio - np.median(log_ratio)) > RATIO_MOVE,
        "sides swapped": left != (left.mean() >= 0.5),
        "directions swapped": (rel * others).sum(1) <= 0,
        "close": np.linalg.norm(rel, axis=1) / max(hq, wq) < CLOSE,
        "touching": np.array(touching),
        "first/last 2": (position < 2) | (position >= len(both) - 2),
    }


def main() -> None:
    ckpt, side, p, _, twins, data = open_twin_split(sys.argv)
    props: dict[str, list] = {}
    turned: list[bool] = []  # per pair frame
    jumped: list[bool] = []  # per track frame
    turned_there: list[bool] = []  # per track frame: the pair's features turned in that frame
    cosines: list[float] = []  # per track: cos(its mean embedding, the pair's mean d)
    track_props: dict[str, list] = {}
    for num_frames, gts, feats, probs, embed, (hq, wq) in decoded_twin_videos(p, data, twins):
        for c, small, both in twin_pairs(gts, num_frames, hq, wq):
            d = torch.stack([feats[t][:, small[0][t]].mean(1) - feats[t][:, small[1][t]].mean(1) for t in both])
            pair_turned = (~loo_agreement(d.numpy())).tolist()
            turned += pair_turned
            fp = frame_properties(small, both, hq, wq)
            for name, values in fp.items():
                props.setdefault(name, []).extend(values.tolist())
            for q in probs[:, c - 1].topk(2).indices.tolist():  # dataset id c is class index c - 1
                margin = (embed[q, both] * d).sum(1)
                sign = 1.0 if (margin > 0).float().mean() >= 0.5 else -1.0
                jumped += (margin * sign <= 0).tolist()
                turned_there += pair_turned
                cosines.append(abs(float(F.cosine_similarity(embed[q, both].mean(0), d.mean(0), dim=0))))
                for name, values in fp.items():
                    track_props.setdefault(name, []).extend(values.tolist())
    turn, jump = np.array(turned), np.array(jumped)
    print(f"{ckpt} side {side}: {len(turn)} twin-pair frames, features turned in {turn.mean():.1%}; "
          f"{len(jump)} track-frames, on the wrong twin in {jump.mean():.1%}")
    print(f"  {'frame property':20s} {'share':>6s} | {'turned if yes / no':>18s} {'of turns':>8s} | "
          f"{'wrong twin if yes / no':>22s} {'of wrong':>8s}")
    for name in props:
        a, b = np.array(props[name]), np.array(track_props[name])
        print(f"  {name:20s} {a.mean():6.1%} | {turn[a].mean() if a.any() else 0:8.1%} / {turn[~a].mean():7.1%} "
              f"{a[turn].mean():8.1%} | {jump[b].mean() if b.any() else 0:10.1%} / {jump[~b].mean():9.1%} "
              f"{b[jump].mean():8.1%}")
    there = np.array(turned_there)
    print(f"  wrong-twin track-frames in frames where the features turned: {there[jump].mean():.1%}; "
          f"|cos(track's mean embedding, pair's mean twin difference)|: median {np.median(cosines):.2f}")
    hidden = np.array(props["occluded"]) | np.array(props["area ratio moved"])
    hidden_t = np.array(track_props["occluded"]) | np.array(track_props["area ratio moved"])
    print(f"  occluded or area ratio moved: {hidden.mean():.1%} of frames, {hidden[turn].mean():.1%} of turns, "
          f"{hidden_t[jump].mean():.1%} of wrong-twin track-frames")


if __name__ == "__main__":
    main()
