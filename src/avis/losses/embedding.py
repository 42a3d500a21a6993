"""Instance-discriminative loss on per-pixel embeddings (an avis option, `instance_embed_dim`).

Why: the tiny model gives two look-alike sounding instances (twins) one shared mask, because
its mask features carry the same values on both; a track's mask `embed . F(x)` cannot prefer
one of them. Hungarian matching cannot teach the split consistently (either twin may be the
one a union-covering query "should" keep). This loss has no matching: in every frame, the
embeddings of one instance's pixels are pulled to their mean and the means of different
instances are pushed apart (the discriminative loss of De Brabandere et al., 2017, applied to a
1x1 projection of the mask features), so the features that masks are made from tell instances
apart, look-alikes included.

Per frame with instances k (soft masks w_k over the P grid cells, mass m_k = sum w_k):
  mu_k = sum_x w_k(x) e(x) / m_k
  pull = mean_k  sum_x w_k(x) relu(|e(x) - mu_k| - pull_margin)^2 / m_k
  push = mean_{k != l} relu(2 * push_margin - |mu_k - mu_l|)^2
The sums over instances and pairs are returned with their counts, so that a batch is
normalised by its totals (frames with more instances weigh more).

Across frames (`clip_parts`, scope "clip"): the clip's T frames count as one picture, so each
instance has one mean over all its pixels in all frames: its pixels are pulled to it in every
frame (an instance keeps its embedding from frame to frame), and the means of different
instances, look-alikes included, are pushed apart. Within a frame (scope "frame") an instance
may change its embedding between frames as long as it differs from the others in each frame;
so a track that follows the embedding can swap two look-alikes between frames.

Letters: T frames, E embedding size, P grid cells (Hm * Wm), n instances of a clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PULL_MARGIN = 0.5  # the paper's delta_v: pixels within this distance of their mean are free
PUSH_MARGIN = 1.5  # the paper's delta_d: means further apart than 2 * this are free
MIN_MASS = 0.5  # an instance needs at least half a grid cell of mask in a frame to count


@dataclass
class EmbeddingLossParts:
    pull: Tensor  # scalar, summed over (instance, frame) entries
    push: Tensor  # scalar, summed over ordered pairs of different instances in one frame
    num_instances: int
    num_pairs: int


def discriminative_parts(
    embed: Tensor,  # (T, E, P) per-pixel embeddings
    masks: Tensor,  # (n, T, P) soft instance masks in [0, 1] on the same grid
    pull_margin: float = PULL_MARGIN,
    push_margin: float = PUSH_MARGIN,
) -> EmbeddingLossParts:
    """The pull and push sums of one clip (see the module docstring)."""
    embed = embed.float()
    weights = masks.float().transpose(0, 1)  # (T, n, P)
    mass = weights.sum(-1)  # (T, n)
    present = mass >= MIN_MASS  # (T, n)
    num_instances = int(present.sum())
    zero = embed.sum() * 0.0  # keeps the embedding in the graph when nothing counts
    if num_instances == 0:
        return EmbeddingLossParts(zero, zero, 0, 0)
    means = torch.einsum("tnp,tep->tne", weights, embed) / mass.clamp(min=MIN_MASS)[..., None]
    # distance of every pixel to every instance mean: (T, n, P)
    dist = (embed[:, None] - means[..., None]).pow(2).sum(2).add(1e-8).sqrt()
    pull_cells = weights * (dist - pull_margin).clamp(min=0).pow(2)  # (T, n, P)
    pull = (pull_cells.sum(-1) / mass.clamp(min=MIN_MASS))[present].sum()

    pairs = present[:, :, None] & present[:, None, :]  # (T, n, n)
    pairs &= ~torch.eye(pairs.shape[1], dtype=torch.bool, device=pairs.device)
    num_pairs = int(pairs.sum())
    if num_pairs == 0:
        return EmbeddingLossParts(pull, zero, num_instances, 0)
    gaps = (means[:, :, None] - means[:, None, :]).pow(2).sum(-1).add(1e-8).sqrt()  # (T, n, n)
    push = (2 * push_margin - gaps).clamp(min=0).pow(2)[pairs].sum()
    return EmbeddingLossParts(pull, push, num_instances, num_pairs)


def clip_parts(
    embed: Tensor,  # (T, E, P) per-pixel embeddings of one clip
    masks: Tensor,  # (n, T, P) soft instance masks
    pull_margin: float = PULL_MARGIN,
    push_margin: float = PUSH_MARGIN,
) -> EmbeddingLossParts:
    """The pull and push sums with one mean per instance over the whole clip (module docstring)."""
    t, e, p = embed.shape
    whole = embed.transpose(0, 1).reshape(1, e, t * p)  # (1, E, T*P): the frames side by side
    return discriminative_parts(whole, masks.reshape(masks.shape[0], 1, t * p), pull_margin, push_margin)


EMBED_SCOPES = {"frame": discriminative_parts, "clip": clip_parts}


def discriminative_loss(parts: list[EmbeddingLossParts]) -> Tensor:
    """Mean pull over all (instance, frame) entries + mean push over all pairs of a batch."""
    if not parts:
        raise ValueError("discriminative_loss needs at least one clip")
    pull = torch.stack([p.pull for p in parts]).sum() / max(sum(p.num_instances for p in parts), 1)
    push = torch.stack([p.push for p in parts]).sum() / max(sum(p.num_pairs for p in parts), 1)
    return pull + push
