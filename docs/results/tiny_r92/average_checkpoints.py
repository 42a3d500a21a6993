"""Uniform average of a run's training checkpoints (the proxy for a weight average that
needs no new training): the model weights of the given checkpoints averaged, written as a
model-only avis checkpoint with the final model's metadata.

    python average_checkpoints.py OUT.pth RUN/model_final.pth RUN/checkpoints/checkpoint_0004000.pth ...
"""

import sys

import torch


def main() -> None:
    out, final, *paths = sys.argv[1:]
    states = [torch.load(p, map_location="cpu", weights_only=True)["model"] for p in paths]
    average = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            average[key] = (sum(s[key].double() for s in states) / len(states)).to(first.dtype)
        else:
            average[key] = states[-1][key]
    payload = torch.load(final, map_location="cpu", weights_only=True)
    payload["model"] = average
    torch.save(payload, out)


if __name__ == "__main__":
    main()
