"""Post-processing of the video module's outputs (the official AVISM inference steps 5-10).

Letters: cQ video queries, K classes, k top-k candidates, q distinct candidate queries,
T frames, t frames of a chunk, Cm mask-embedding size, Hm x Wm stride-4 grid,
Hp x Wp padded input, h x w unpadded input, H x W output size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avis.models.peak_prior import PeakPrior
from avis.models.video_module import video_masks
from avis.precision import float32_island

SCORE_EPS = 1e-6  # added to the mask-score denominator (official)
MASK_LOGIT_THRESHOLD = 0.0  # output mask = resized logit > 0
# Full-size logits per piece of `mask_logit_pieces` (4 MB of float32): the temporaries of a
# piece stay in cache and are recycled by the allocator; whole (q, t, Hp, Wp) blocks were
# 100s of MB, page-faulted afresh for every block (docs/benchmarks.md).
PIECE_PIXELS = 1 << 20
# On a GPU small pieces would mean thousands of tiny kernel launches per video: there a
# piece holds up to 2^26 logits (256 MB of float32), so a frame's candidates are one piece.
GPU_PIECE_PIXELS = 1 << 26
# the mask logits in float32 outside autocast (True), or in the autocast dtype (False; only
# for measuring what the float32 island buys: benchmarks/precision_accuracy.py)
MASK_LOGITS_FLOAT32 = True


@dataclass
class Candidates:
    """Top-k (query, class) pairs; one query may appear with several classes."""

    scores: Tensor  # (k,) class probability
    labels: Tensor  # (k,) int64, 0..K-1
    query_index: Tensor  # (k,) int64, 0..cQ-1
    flat_index: Tensor  # (k,) int64, query * K + label


def select_candidates(logits: Tensor, top_k: int) -> Candidates:
    """logits (cQ, K+1) -> the top-k (query, class) pairs by softmax probability (no-object dropped).

    The pairs come sorted by score, highest first (the official code uses an unsorted top-k;
    the set is the same).
    """
    probs = logits.float().softmax(-1)[:, :-1]  # (cQ, K), float32 under any precision
    num_classes = probs.shape[1]
    k = min(top_k, probs.numel())
    scores, flat = probs.flatten().topk(k, sorted=True)
    return Candidates(
        scores=scores,
        labels=flat % num_classes,
        query_index=torch.div(flat, num_classes, rounding_mode="floor"),
        flat_index=flat,
    )


def rechunk(chunks: Iterable[Tensor], size: int) -> Iterator[Tensor]:
    """Re-cut a stream of (t_i, ...) tensors into blocks of exactly ``size`` frames (last shorter).

    The blocks are the same whatever the input chunking, so sums over them are too.
    """
    carry: Tensor | None = None  # the frames of an unfinished block
    for chunk in chunks:
        first = 0
        if carry is not None:  # finish the block with the chunk's first frames (a small copy)
            first = min(size - carry.shape[0], chunk.shape[0])
            carry = torch.cat([carry, chunk[:first]])
            if carry.shape[0] < size:
                continue
            yield carry
            carry = None
        n_full = first + (chunk.shape[0] - first) // size * size
        for start in range(first, n_full, size):
            yield chunk[start : start + size]  # views: the chunk is not copied
        carry = chunk[n_full:] if n_full < chunk.shape[0] else None
    if carry is not None:
        yield carry


def valid_grid(
    grid: tuple[int, ...], padded_size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[int, int]:
    """Rows and columns of the (Hm, Wm) mask grid that cover the unpadded input (ceil)."""
    return (
        -(-input_size[0] * grid[0] // padded_size[0]),
        -(-input_size[1] * grid[1] // padded_size[1]),
    )


def low_res_mask_logits(
    embed: Tensor,
    mask_features: Tensor,
    padded_size: tuple[int, int],
    input_size: tuple[int, int],
    prior: PeakPrior | None = None,
) -> Tensor:
    """embed (q, Cm) or per frame (q, t, Cm) . mask_features (t, Cm, Hm, Wm) -> logits
    (q, t, Hm, Wm) on the stride-4 grid, with the model's peak prior when it has one (the peak
    looked for in the unpadded part of the grid)."""
    valid = valid_grid(tuple(mask_features.shape[-2:]), padded_size, input_size)
    # the training product for one clip (B = 1)
    return video_masks(embed[None], mask_features[None], embed.dim() == 3, prior, valid)[0]


def cropped_mask_logits(
    embed: Tensor,
    mask_features: Tensor,
    padded_size: tuple[int, int],
    input_size: tuple[int, int],
    prior: PeakPrior | None = None,
) -> Tensor:
    """embed (q, Cm) or per frame (q, t, Cm) . mask_features (t, Cm, Hm, Wm) -> logits (q, t, h, w).

    Bilinear upsampling (align_corners=False) to the padded size, then the crop to the
    unpadded input size.
    """
    logits = low_res_mask_logits(embed, mask_features, padded_size, input_size, prior)
    logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
    return logits[:, :, : input_size[0], : input_size[1]]


def mask_logit_pieces(
    embed: Tensor,
    mask_features: Tensor,
    padded_size: tuple[int, int],
    input_size: tuple[int, int],
    prior: PeakPrior | None = None,
) -> Iterator[tuple[slice, int, Tensor]]:
    """`cropped_mask_logits` piece by piece: (rows, frame, logits (r, h, w)) for a few
    candidate rows of one frame at a time, every piece about `PIECE_PIXELS` full-size logits.

    embed (q, Cm) or per frame (q, t, Cm); mask_features (t, Cm, Hm, Wm). Each piece is
    `cropped_mask_logits` of its rows and frame (up to the float rounding of the product,
    which is taken for all rows of a frame at once). Always float32, outside autocast: the
    0.5 threshold of the masks is decided on float32 logits under every `--precision`.
    """
    q = embed.shape[0]
    valid = valid_grid(tuple(mask_features.shape[-2:]), padded_size, input_size)
    piece = PIECE_PIXELS if mask_features.device.type == "cpu" else GPU_PIECE_PIXELS
    rows = max(1, piece // (padded_size[0] * padded_size[1]))
    h, w = input_size
    for frame in range(mask_features.shape[0]):
        features = mask_features[frame].flatten(1)  # (Cm, Hm*Wm)
        frame_embed = embed if embed.dim() == 2 else embed[:, frame]  # (q, Cm)
        # the low-resolution logits of all rows in one product (q x Hm*Wm floats, a few MB):
        # the frame's features are read once, not once per piece
        if MASK_LOGITS_FLOAT32:
            with float32_island(features.device):
                low = frame_embed.float() @ features.float()
        else:
            low = (frame_embed @ features).float()
        low = low.view(q, 1, *mask_features.shape[-2:])  # (q, 1, Hm, Wm)
        if prior is not None:
            with float32_island(features.device):
                low = prior(frame_embed.float()[:, None], low, valid)
        for first in range(0, q, rows):
            part = slice(first, first + rows)
            logits = F.interpolate(low[part], size=padded_size, mode="bilinear", align_corners=False)
            yield part, frame, logits[:, 0, :h, :w]  # (r, h, w)


def binary_masks(
    embed: Tensor,  # (q, Cm) or (q, t, Cm)
    mask_features: Tensor,  # (t, Cm, Hm, Wm)
    padded_size: tuple[int, int],
    input_size: tuple[int, int],
    out_size: tuple[int, int],
    prior: PeakPrior | None = None,
) -> Tensor:  # (q, t, H, W) bool
    """`resize_masks(cropped_mask_logits(...), out_size)`, computed piece by piece."""
    q, t = embed.shape[0], mask_features.shape[0]
    masks = torch.empty((q, t, *out_size), dtype=torch.bool, device=mask_features.device)
    pieces = mask_logit_pieces(embed, mask_features, padded_size, input_size, prior)
    for rows, frame, logits in pieces:
        masks[rows, frame] = resize_masks(logits[None], out_size)[0]
    return masks


def block_embed(embed: Tensor, start: int, size: int) -> Tensor:
    """The mask embeddings of frames start .. start+size: (q, Cm) as is, (q, T, Cm) sliced."""
    return embed if embed.dim() == 2 else embed[:, start : start + size]


def resize_masks(logits: Tensor, out_size: tuple[int, int]) -> Tensor:
    """logits (q, t, h, w) -> boolean masks (q, t, H, W): bilinear resize, logit > 0."""
    if tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits > MASK_LOGIT_THRESHOLD


@dataclass
class MaskConfidence:
    """Mask-confidence sums of each candidate query over all frames and pixels."""

    numerator: Tensor  # (q,) sum of sigmoid * [sigmoid > thr]
    denominator: Tensor  # (q,) number of pixels with sigmoid > thr

    @classmethod
    def zeros(cls, embed: Tensor) -> MaskConfidence:
        q = embed.shape[0]
        return cls(embed.new_zeros(q, dtype=torch.float32), embed.new_zeros(q, dtype=torch.float32))

    def add(
        self,
        embed: Tensor,  # (q, Cm) or (q, t, Cm) per frame
        block: Tensor,  # (t, Cm, Hm, Wm) mask features of the next frames
        padded_size: tuple[int, int],
        input_size: tuple[int, int],
        prob_threshold: float,
        prior: PeakPrior | None = None,
    ) -> None:
        numerator = torch.zeros_like(self.numerator)
        denominator = torch.zeros_like(self.denominator)
        for rows, _, logits in mask_logit_pieces(embed, block, padded_size, input_size, prior):
            probs = logits.sigmoid_()  # in place: the piece's logits are not used again
            hard = probs > prob_threshold
            numerator[rows] += probs.mul_(hard).sum((1, 2))
            denominator[rows] += hard.sum((1, 2))
        self.numerator += numerator  # block sums added in order, as before
        self.denominator += denominator

    def score(self) -> Tensor:  # (q,)
        return self.numerator / (self.denominator + SCORE_EPS)


def mask_confidence(
    embed: Tensor,
    mask_feature_blocks: Iterable[Tensor],
    padded_size: tuple[int, int],
    input_size: tuple[int, int],
    prob_threshold: float,
    prior: PeakPrior | None = None,
) -> MaskConfidence:
    """Accumulate the mask-confidence sums block by block (float32, block sums added in order)."""
    conf = MaskConfidence.zeros(embed)
    start = 0
    for block in mask_feature_blocks:
        size = block.shape[0]
        embed_block = block_embed(embed, start, size)
        conf.add(embed_block, block, padded_size, input_size, prob_threshold, prior)
        start += size
    return conf
