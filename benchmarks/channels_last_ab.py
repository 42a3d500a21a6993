"""A/B of the ResNet backbone's channels-last convolutions (docs/benchmarks.md, item 17).

    python benchmarks/channels_last_ab.py [--repeats 5]

R50 preset, random weights, 6 frames at 384x640, 2 threads: the eager backbone with
`channels_last` off (NCHW convolutions) and on (the default), interleaved in one process;
prints the times, their medians and the largest difference of the outputs relative to the
largest output value of each level.
"""

import argparse
import statistics
import time

import torch

from avis.models import build_avism, get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    backbone = build_avism(get_preset("avism_r50")).backbone.eval()
    frames = torch.rand(6, 3, 384, 640) * 255  # (t, 3, H, W)
    times: dict[bool, list[float]] = {False: [], True: []}
    outputs = {}
    with torch.no_grad():
        backbone(frames)  # warm-up
        for _ in range(args.repeats):
            for channels_last in times:
                backbone.channels_last = channels_last
                start = time.perf_counter()
                outputs[channels_last] = backbone(frames)
                times[channels_last].append(time.perf_counter() - start)
    for channels_last, values in times.items():
        label = "channels-last" if channels_last else "NCHW"
        print(f"{label:>13}: {' '.join(f'{v:.3f}' for v in values)} s, median {statistics.median(values):.3f} s")
    for name, on in outputs[True].items():
        off = outputs[False][name]
        rel = ((on - off).abs().max() / off.abs().max()).item()
        print(f"{name}: largest difference / largest value = {rel:.1e}")


if __name__ == "__main__":
    main()
