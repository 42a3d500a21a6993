"""Do a model's video mask features tell two twins apart the same way in every frame?

A track's video mask is e_t . F_t (per-frame embedding e_t, features F_t = base + spatial term).
For each video with twins (two ground-truth tracks of one class) of a test split, and each frame
where both twins have pixels on the mask grid, d_t = mean F_t over twin A's pixels - mean over
twin B's. If one direction w separates the twins in (nearly) every frame, the features carry a
twin's identity over the video and a track that jumps has an embedding that failed to follow
it; if not, the features themselves change which twin looks like which. Reported, over all
such frames: the share where w . d_t > 0 for w = the mean of the video's other frames' d_s
(leave one out), for the full features, the base alone and the spatial term alone; and, for
comparison, the share of frames where A is on the same side of B (left/right by mask centroid)
as in most of the video's frames (what a pure "left one / right one" cue would give).

    python twin_features.py CKPT ROOT [SIDE]      # ROOT: a test split (eval-seeds cache); SIDE 224
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avis.data.annotations import decode_track

sys.path.insert(0, str(Path(__file__).parents[1] / "tiny_r69"))
from twin_ap import open_twin_split  # noqa: E402  (docs/results/tiny_r69/twin_ap.py)


def encoded_twin_videos(p, data, twins, with_queries: bool):
    """Per video with twins, in id order: (frames (T, H, W, 3), audio input (T, D), ground truth
    [(category_id, (T, H, W) masks)], the whole video's ChunkEncoding, (hq, wq) the mask grid of
    its real pixels)."""
    for video in sorted(data.videos, key=lambda v: v.id):
        if video.id not in twins:
            continue
        frames = data.load_frames(video)
        audio = torch.from_numpy(data.load_audio_input(video).astype(np.float32))
        gts = [(t.category_id, decode_track(t)) for t in data.tracks[video.id]]
        encode, (h, w), _ = p.encoder(frames, audio)
        with torch.no_grad():
            enc = encode(0, len(frames), with_queries)
        yield frames, audio, gts, enc, (h // 4, w // 4)


def decoded_twin_videos(p, data, twins):
    """Per video with twins, as `encoded_twin_videos`, decoded by the video module: (T, ground
    truth, video mask features on the mask grid (T, Cm, hq, wq), the last layer's class
    probabilities (cQ, K+1) and per-frame mask embeddings (cQ, T, Cm), (hq, wq))."""
    for frames, audio, gts, enc, (hq, wq) in encoded_twin_videos(p, data, twins, with_queries=True):
        with torch.no_grad():
            out = p.model.decode_video(enc.frame_queries, audio)
        embed = out.pred_mask_embed[-1, 0, 0].float()
        if embed.dim() != 3:
            raise SystemExit("this diagnostic needs a model with per-frame mask embeddings")
        feats = enc.mask_features[..., :hq, :wq].float()
        yield len(frames), gts, feats, out.pred_logits[-1, 0, 0].float().softmax(-1), embed, (hq, wq)


def twin_pairs(gts: list, num_frames: int, hq: int, wq: int):
    """Per class with exactly two ground-truth tracks (category_id, (T, H, W) masks) whose masks
    both have pixels on the hq x wq mask grid in at least 3 frames: (class, the two masks on the
    grid (T, hq, wq) bool, the indices of those frames)."""
    for c in sorted({c for c, _ in gts}):
        tracks = [g for c2, g in gts if c2 == c]
        if len(tracks) != 2:
            continue
        small = [
            F.interpolate(torch.from_numpy(g).float()[:, None], size=(hq, wq), mode="area")[:, 0] > 0.5
            for g in tracks
        ]  # (T, hq, wq) each
        both = [t for t in range(num_frames) if small[0][t].any() and small[1][t].any()]
        if len(both) >= 3:
            yield c, small, both


def loo_agreement(d: np.ndarray) -> np.ndarray:
    """d (T, C) -> (T,) bool: frame t agrees with the mean of the other frames' differences."""
    total = d.sum(0, keepdims=True)
    others = (total - d) / max(len(d) - 1, 1)
    return (others * d).sum(1) > 0


def main() -> None:
    ckpt, side, p, _, twins, data = open_twin_split(sys.argv)
    seen: dict[str, list] = {}
    original = p.model.video_mask_features

    def capture(base, term):  # the two parts of the video module's mask features
        seen["parts"] = (base, term)
        return original(base, term)

    p.model.video_mask_features = capture
    agree: dict[str, list[bool]] = {"full": [], "base": [], "spatial term": [], "side (centroid)": []}
    pairs = 0
    for frames, _, gts, enc, (hq, wq) in encoded_twin_videos(p, data, twins, with_queries=False):
        base, term = seen["parts"]
        parts = {"full": enc.mask_features, "base": base}
        if term is not None:
            parts["spatial term"] = term.expand(-1, -1, base.shape[-2], -1)
        parts = {k: v[..., :hq, :wq].float() for k, v in parts.items()}  # (T, Cm, hq, wq)
        for _, small, both in twin_pairs(gts, len(frames), hq, wq):
            pairs += 1
            for name, feats in parts.items():
                d = np.stack([
                    (feats[t][:, small[0][t]].mean(1) - feats[t][:, small[1][t]].mean(1)).numpy()
                    for t in both
                ])  # fmt: skip
                agree[name] += loo_agreement(d).tolist()
            xs = torch.arange(wq, dtype=torch.float32)
            cx = [np.array([(m[t].float().sum(0) * xs).sum() / m[t].sum() for t in both]) for m in small]
            left = cx[0] < cx[1]
            agree["side (centroid)"] += (left == (left.mean() >= 0.5)).tolist()
    n = len(agree["full"])
    print(f"{ckpt} side {side}: {pairs} twin pairs, {n} frames with both twins on the grid")
    for name, values in agree.items():
        if values:
            print(f"  {name:16s} frames agreeing with the video's twin direction: {np.mean(values):.1%}")


if __name__ == "__main__":
    main()
