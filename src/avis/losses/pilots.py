"""Mask-pilot queries of a training batch, made from its frame targets (MP-Former).

Letters: N = B*T frames, G pilots per frame (the most instances any frame of the batch has),
n instances of one frame, Hm x Wm the mask-feature grid (stride 4 of the padded input).

Pilot g of frame i stands for the frame's g-th target (the order of
`avis.losses.targets.frame_match_targets`), so its loss needs no matching. Noise keeps the
task from being a copy: with probability `label_noise` a pilot starts from a random class
instead of its own, and its mask is moved by up to `max_shift` of the instance's box size
along each axis (zeros enter where it moves away from the border), so the decoder must find
the instance near where the pilot attends and keep to it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avis.losses.matcher import MatchTarget, resample_to_grid
from avis.models.frame_decoder import PilotQueries


def shift_mask(mask: Tensor, dy: int, dx: int) -> Tensor:
    """mask (H, W) moved by dy rows and dx columns; what leaves the grid is lost, zeros enter."""
    h, w = mask.shape
    out = torch.zeros_like(mask)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def jitter_mask(mask: Tensor, max_shift: float, generator: torch.Generator | None = None) -> Tensor:
    """mask (H, W) float moved by a uniform random offset of up to `max_shift` x its box size
    per axis (rounded to cells); an empty mask stays empty."""
    rows = mask.amax(1).nonzero()
    cols = mask.amax(0).nonzero()
    if max_shift <= 0 or len(rows) == 0:
        return mask.clone()
    box = torch.tensor(
        [float(rows[-1] - rows[0] + 1), float(cols[-1] - cols[0] + 1)], device=mask.device
    )
    offset = (torch.rand(2, generator=generator, device="cpu").to(mask.device) * 2 - 1) * max_shift
    dy, dx = (offset * box).round().long().tolist()
    return shift_mask(mask, int(dy), int(dx))


def make_pilot_queries(
    items: list[MatchTarget],
    grid: tuple[int, int],
    num_classes: int,
    label_noise: float = 0.2,
    max_shift: float = 0.2,
    generator: torch.Generator | None = None,
) -> PilotQueries | None:
    """One pilot per target of every frame: items are the N frame targets (labels (n,),
    masks (n, 1, Hp, Wp)). Targets without a class (the official quirk's no-object label K)
    get no pilot (valid False). There is at least one slot per frame, all padding when no
    frame has a target: the pilot table then still takes part in the step (under DDP every
    process must use the same parameters in every step). None only for N = 0 frames."""
    if not 0 <= label_noise <= 1 or max_shift < 0:
        raise ValueError(
            f"need 0 <= label_noise <= 1 and max_shift >= 0, got {label_noise}, {max_shift}"
        )
    if not items:
        return None
    g = max(1, max(len(item.labels) for item in items))
    device = items[0].labels.device
    n = len(items)
    labels = torch.zeros(n, g, dtype=torch.int64, device=device)
    masks = torch.zeros(n, g, *grid, dtype=torch.float32, device=device)
    valid = torch.zeros(n, g, dtype=torch.bool, device=device)
    for i, item in enumerate(items):
        k = len(item.labels)
        if k == 0:
            continue
        on_grid = resample_to_grid(item.masks[:, 0], grid)  # (k, Hm, Wm)
        for j in range(k):
            masks[i, j] = jitter_mask(on_grid[j], max_shift, generator)
        own = item.labels.long()
        flip = torch.rand(k, generator=generator).to(device) < label_noise
        drawn = torch.randint(num_classes, (k,), generator=generator).to(device)
        labels[i, :k] = torch.where(flip, drawn, own).clamp(max=num_classes - 1)
        valid[i, :k] = own < num_classes
    return PilotQueries(labels=labels, masks=masks, valid=valid)
