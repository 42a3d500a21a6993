"""Do the spatial-audio maps tell twins apart? (benchmark v2, ground truth only, no model)

For each twin pair (two tracks of one class) and each step between frames t and t+1 where
both twins are annotated: the band profile of the map at each twin's column (its mask's mean
x) in frame t, compared with both twins' profiles in frame t+1. Prints the share of steps
where keeping the twins (A->A, B->B) is closer than swapping them.

    python twin_cue.py data/synth_v2 [max videos, default 300]
"""

import sys

import numpy as np

from avis.data import load_split


def column_profile(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) the map (B, P) read at the mask's mean column (linear between position bins)."""
    bins = maps.shape[-1]
    u = (np.nonzero(mask)[1].mean() + 0.5) / mask.shape[1] * bins - 0.5
    lo = int(np.clip(np.floor(u), 0, bins - 1))
    hi = min(lo + 1, bins - 1)
    w = float(np.clip(u - lo, 0, 1))
    return maps[:, lo] * (1 - w) + maps[:, hi] * w


def main() -> None:
    split = load_split(sys.argv[1], "train", spatial_audio=True)
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    kept = steps = 0
    for video in split.videos[:limit]:
        tracks = split.tracks[video.id]
        cats = [t.category_id for t in tracks]
        for cat in sorted(set(cats)):
            pair = [t for t in tracks if t.category_id == cat]
            if len(pair) != 2:
                continue
            maps = split.load_spatial(video)  # (T, B, P)
            for t in range(video.length - 1):
                if any(tr.segmentations[k] is None for tr in pair for k in (t, t + 1)):
                    continue
                a0, b0 = (column_profile(maps[t], tr.mask(t)) for tr in pair)
                a1, b1 = (column_profile(maps[t + 1], tr.mask(t + 1)) for tr in pair)
                keep = np.linalg.norm(a0 - a1) + np.linalg.norm(b0 - b1)
                swap = np.linalg.norm(a0 - b1) + np.linalg.norm(b0 - a1)
                kept += keep < swap
                steps += 1
    print(f"{steps} steps: the same twin's profile is closer in {kept / max(steps, 1):.3f}")


if __name__ == "__main__":
    main()
