"""A/B of two pixel-decoder changes that keep its results (docs/benchmarks.md, item 16).

    python benchmarks/deform_sampling_ab.py [--compare sampling|ffn-buffer] [--repeats 5]

R50 preset, random weights with query-steered sampling (offset and attention-weight layers
drawn at random, as in a trained model), 6 frames at 384x640, 2 threads: the eager pixel
decoder before and after a change, interleaved in one process; prints the times, their
medians and the largest output difference.

- `sampling`: sampling locations normalised and then scaled back to pixels (before, patched
  in) vs pixel coordinates taken straight from the offsets (now).
- `ffn-buffer`: a fresh tensor for the FFN hidden rows of every query block (before, patched
  in) vs one buffer shared by the blocks of a layer call (now).
"""

import argparse
import time

import torch

from avis.models import build_avism, get_preset
from avis.models import msdeform as md
from avis.models import pixel_decoder as pd

BLOCK = pd.MSDeformAttnEncoderLayer._block


def fresh_hidden_block(self, src, pos, reference_points, value, spatial_shapes, hidden=None):
    """`MSDeformAttnEncoderLayer._block` before the change: linear1 allocates its output."""
    return BLOCK(self, src, pos, reference_points, value, spatial_shapes)


def normalised_attend(self, query, reference_points, value, spatial_shapes):
    """`MSDeformAttn.attend` before the change: locations in [0, 1], then pixels."""
    n, lq, _ = query.shape
    offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
    weights = md._softmax_short_rows(self.attention_weights(query).view(n, lq, self.n_heads, -1))
    weights = weights.view(n, lq, self.n_heads, self.n_levels, self.n_points)
    sizes = md.level_sizes(spatial_shapes, query)
    locations = reference_points[:, :, None, :, None, :] + offsets / sizes
    return self.output_proj(md.sample_with_gather(value, spatial_shapes, locations, weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["sampling", "ffn-buffer"], default="sampling")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_avism(get_preset("avism_r50")).eval()
    with torch.no_grad():
        for m in model.pixel_decoder.modules():
            if isinstance(m, md.MSDeformAttn):
                m.sampling_offsets.weight.normal_(0.0, 0.02)
                m.attention_weights.weight.normal_(0.0, 0.02)
    frames = torch.rand(1, 6, 3, 384, 640) * 255
    if args.compare == "sampling":
        patch = {"normalised": normalised_attend, "pixels": md.MSDeformAttn.attend}
        target, attribute = md.MSDeformAttn, "attend"
    else:
        patch = {"fresh": fresh_hidden_block, "buffer": BLOCK}
        target, attribute = pd.MSDeformAttnEncoderLayer, "_block"
    times: dict[str, list[float]] = {name: [] for name in patch}
    outputs = {}
    with torch.no_grad():
        features = model.backbone_features(frames, [(360, 640)])
        maps = [features[n] for n in ("res2", "res3", "res4", "res5")]
        model.pixel_decoder(maps)  # warm-up
        for _ in range(args.repeats):
            for name, function in patch.items():
                setattr(target, attribute, function)
                start = time.perf_counter()
                outputs[name] = model.pixel_decoder(maps)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        print(f"{name:>10}: median {median:.2f} s per 6 frames  ({', '.join(f'{v:.2f}' for v in values)})")
    a, b = outputs.values()
    diff = max(
        (x - y).abs().max().item()
        for x, y in zip([a.mask_features, *a.multi_scale_features], [b.mask_features, *b.multi_scale_features])
    )
    scale = a.mask_features.abs().max().item()
    print(f"largest output difference: {diff:.2e} (largest mask feature {scale:.2e})")


if __name__ == "__main__":
    main()
