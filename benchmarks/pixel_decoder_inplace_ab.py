"""A/B of the in-place residual adds and ReLUs of the pixel decoder (docs/benchmarks.md, item 9).

    python benchmarks/pixel_decoder_inplace_ab.py [--repeats 7]

R50 preset, random weights, 6 frames at 384x640, 2 threads: the eager pixel decoder with the
out-of-place formulas (the code before the change, patched in) and with today's code,
interleaved in one process; prints the times, their medians and whether the outputs are equal.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from avis.models import build_avism, get_preset
from avis.models import pixel_decoder as pd


def out_of_place_layer(self, src, pos, reference_points, spatial_shapes, out=None):
    attn = self.self_attn(src + pos, reference_points, src, spatial_shapes)
    src = self.norm1(src + self.dropout(attn))
    ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
    return self.norm2(src + self.dropout(ffn))


def out_of_place_conv(self, x):
    x = self.norm(nn.Conv2d.forward(self, x))
    return F.relu(x) if self.relu else x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_avism(get_preset("avism_r50")).eval()
    frames = torch.rand(1, 6, 3, 384, 640) * 255
    variants = {
        "out-of-place": (out_of_place_layer, out_of_place_conv),
        "in-place": (pd.MSDeformAttnEncoderLayer.forward, pd.ConvNorm.forward),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs = {}
    with torch.no_grad():
        features = model.backbone_features(frames, [(360, 640)])
        maps = [features[n] for n in ("res2", "res3", "res4", "res5")]
        model.pixel_decoder(maps)  # warm-up
        for _ in range(args.repeats):
            for name, (layer_forward, conv_forward) in variants.items():
                pd.MSDeformAttnEncoderLayer.forward, pd.ConvNorm.forward = layer_forward, conv_forward
                start = time.perf_counter()
                outputs[name] = model.pixel_decoder(maps)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        print(f"{name:>13}: median {median:.2f} s per 6 frames  ({', '.join(f'{v:.2f}' for v in values)})")
    a, b = outputs.values()
    same = torch.equal(a.mask_features, b.mask_features) and all(
        torch.equal(x, y) for x, y in zip(a.multi_scale_features, b.multi_scale_features)
    )
    print("outputs equal:", same)


if __name__ == "__main__":
    main()
