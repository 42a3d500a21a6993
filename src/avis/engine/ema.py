"""An exponential moving average of the model's weights (Polyak averaging).

From optimiser step `start` on, after every step: `avg <- decay * avg + (1 - decay) * w` for
each floating-point tensor of the state dict (integer buffers are copied); the average
starts as a copy of the weights after step `start`. The averaged weights are what the run's
evaluation scores and what `model_final.pth` holds; the training checkpoints keep the raw
weights (what the optimiser continues from) and the average beside them, so a resumed run
continues both exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    def __init__(self, decay: float, start: int) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.start = decay, start
        self.average: dict[str, torch.Tensor] | None = None  # None until step `start`

    @property
    def active(self) -> bool:
        return self.average is not None

    @torch.no_grad()
    def update(self, module: nn.Module, steps_done: int) -> None:
        """Fold in the weights after optimiser step `steps_done` (1-based)."""
        if steps_done < self.start:
            return
        state = module.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
            return
        for key, value in state.items():
            avg = self.average[key]
            if avg.is_floating_point():
                avg.lerp_(value.detach(), 1.0 - self.decay)  # avg + (1 - decay) * (w - avg)
            else:
                avg.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """CPU copies of the averaged tensors (None before step `start`)."""
        if self.average is None:
            return None
        return {k: v.detach().cpu().clone() for k, v in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor] | None, module: nn.Module) -> None:
        """Restore a saved average (None: not started yet); keys must be the model's."""
        if state is None:
            self.average = None
            return
        own = module.state_dict()
        if set(state) != set(own):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise KeyError(f"weight average does not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")
        self.average = {k: v.to(own[k].device, own[k].dtype).clone() for k, v in state.items()}

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """The averaged weights in `module` for the duration (nothing changes before `start`)."""
        if self.average is None:
            yield
            return
        raw = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.average, strict=True)
        try:
            yield
        finally:
            module.load_state_dict(raw, strict=True)
