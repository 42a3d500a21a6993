"""A/B of the mask post-processing in pieces (docs/benchmarks.md, items 11 and 14).

    python benchmarks/mask_scoring_ab.py [--queries 100] [--frames 20] [--repeats 4]

The mask scores of `q` candidate queries over `frames` frames of 96 x 160 mask features
(R50 at 360 x 640, padded 384 x 640), computed the old way (whole (q, 5, Hp, Wp) blocks of
full-size logits, `cropped_mask_logits`) and piece by piece (`MaskConfidence.add`, a few
queries of one frame at a time), and piece by piece with one low-resolution product per
piece (the code between items 11 and 14: the frame's features read once per piece),
interleaved in one process; prints wall and kernel seconds and the largest score difference.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from avis.inference.postprocess import PIECE_PIXELS, MaskConfidence, cropped_mask_logits

PADDED, INPUT, THRESHOLD, BLOCK = (384, 640), (360, 640), 0.5, 5


def whole_blocks(embed: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """The scores as computed before the change (whole-block temporaries)."""
    num = embed.new_zeros(embed.shape[0])
    den = embed.new_zeros(embed.shape[0])
    for block in blocks:
        probs = cropped_mask_logits(embed, block, PADDED, INPUT).sigmoid()
        hard = (probs > THRESHOLD).float()
        num += (probs * hard).flatten(1).sum(1)
        den += hard.flatten(1).sum(1)
    return num / (den + 1e-6)


def row_products(embed: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """Pieces as computed before item 14: each piece's rows multiplied by the frame's features."""
    num = embed.new_zeros(embed.shape[0])
    den = embed.new_zeros(embed.shape[0])
    rows = max(1, PIECE_PIXELS // (PADDED[0] * PADDED[1]))
    for block in blocks:
        for frame in range(block.shape[0]):
            for first in range(0, embed.shape[0], rows):
                part = slice(first, first + rows)
                logits = cropped_mask_logits(embed[part], block[frame : frame + 1], PADDED, INPUT)
                probs = logits[:, 0].sigmoid_()
                hard = probs > THRESHOLD
                num[part] += probs.mul_(hard).sum((1, 2))
                den[part] += hard.sum((1, 2))
    return num / (den + 1e-6)


def pieces(embed: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    conf = MaskConfidence.zeros(embed)
    for block in blocks:
        conf.add(embed, block, PADDED, INPUT, THRESHOLD)
    return conf.score()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    embed = torch.randn(args.queries, 256) * 0.05
    blocks = [torch.randn(min(BLOCK, args.frames - s), 256, 96, 160) for s in range(0, args.frames, BLOCK)]
    variants = {"whole blocks": whole_blocks, "row products": row_products, "pieces": pieces}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    scores = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0, k0 = time.perf_counter(), os.times().system
                scores[name] = fn(embed, blocks)
                times[name].append((time.perf_counter() - t0, os.times().system - k0))
    for name, values in times.items():
        walls = sorted(v[0] for v in values)
        print(
            f"{name:>12}: median {walls[len(walls) // 2]:.2f} s for {args.frames} frames "
            f"(wall/kernel: {', '.join(f'{w:.2f}/{k:.2f}' for w, k in values)})"
        )
    for name in ("whole blocks", "row products"):
        diff = (scores[name] - scores["pieces"]).abs().max().item()
        print(f"largest score difference, {name} vs pieces: {diff:.2e}")


if __name__ == "__main__":
    main()
