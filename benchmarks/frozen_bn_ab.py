"""A/B of the frozen-batch-norm folding in the ResNet-50 backbone (eager, no autograd).

    python benchmarks/frozen_bn_ab.py [--frames 6] [--repeats 4] [--threads 2]

"folded": `ConvNorm.forward` as shipped (the norm folded into the convolution's weight and
bias); "unfolded": convolution, then the frozen norm as a separate pass. The two run
interleaved in one process on the R50 preset's padded 360p input (384 x 640); the first
repeat is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from avis.models.avism import build_avism
from avis.models.backbones.resnet import ConvNorm
from avis.models.config import PRESETS


def _unfolded(self: ConvNorm, x: torch.Tensor) -> torch.Tensor:
    return self.norm(nn.Conv2d.forward(self, x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_avism(PRESETS["avism_r50"]()).eval()
    x = (torch.rand(args.frames, 3, 384, 640) * 255 - model.pixel_mean) / model.pixel_std
    variants = {"folded": ConvNorm.forward, "unfolded": _unfolded}
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs = {}
    try:
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, forward in variants.items():
                    ConvNorm.forward = forward
                    start = time.perf_counter()
                    outputs[name] = model.backbone(x)
                    times[name].append(time.perf_counter() - start)
    finally:
        ConvNorm.forward = variants["folded"]
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values[1:]):.3f} s per {args.frames} frames {values}")
    diff = max(float((outputs["folded"][k] - outputs["unfolded"][k]).abs().max()) for k in outputs["folded"])
    print(f"max |folded - unfolded| = {diff:.3g}")


if __name__ == "__main__":
    main()
