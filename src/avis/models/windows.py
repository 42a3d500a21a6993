"""Temporal attention windows of the video module (Swin-style, over frames).

T frames are padded to Tp, a multiple of the window size W, and cut into Nw = Tp / W
windows; odd encoder layers may roll the frames by ceil(W / 2) first (shifted windows), with
masks that keep wrapped-around and padding frames apart, as the official AVISM code does.

Letters: T frames, Tp padded frames, W frames per window, Nw windows, P tokens per frame,
N sequences, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import torch
from torch import Tensor


@dataclass
class WindowLayout:
    """How T frames are cut into attention windows (one per clip; all clips share it)."""

    num_frames: int  # T, real frames
    window: int  # W frames per window (= Tp when windows are off)
    num_windows: int  # Nw
    shift: int  # frames the shifted windows roll by: ceil(W / 2)
    padded: Tensor  # (Tp,) bool, True = padding frame
    windowed: bool  # False when the window size is 0 (one window, no padding, no shift)

    @property
    def padded_frames(self) -> int:  # Tp
        return self.num_windows * self.window


def window_layout(
    num_frames: int, window_size: int, device: torch.device | None = None
) -> WindowLayout:
    """Pad T to a multiple of ``window_size`` (0 = a single window over all frames)."""
    if window_size < 0:
        raise ValueError(f"window_size must be >= 0, got {window_size}")
    if window_size == 0:
        padded = torch.zeros(num_frames, dtype=torch.bool, device=device)
        return WindowLayout(num_frames, num_frames, 1, 0, padded, windowed=False)
    num_windows = ceil(num_frames / window_size)
    padded = torch.zeros(num_windows * window_size, dtype=torch.bool, device=device)
    padded[num_frames:] = True
    return WindowLayout(
        num_frames, window_size, num_windows, ceil(window_size / 2), padded, windowed=True
    )


def shifted_window_blocked(layout: WindowLayout) -> Tensor:
    """Frame-level blocked pairs of the shifted windows: (Nw, W, W) bool, True = blocked.

    After rolling the frames by ``shift``, window w holds rolled positions w*W .. w*W+W-1.
    Blocked: rows of padding query frames; in the first and last window every pair that
    involves a padding frame; in the first window every pair that mixes the frames wrapped
    around from the end (positions < shift) with the others.
    """
    nw, w, s = layout.num_windows, layout.window, layout.shift
    rolled = torch.roll(layout.padded, s, 0).view(nw, w)
    blocked = rolled[:, :, None].expand(nw, w, w).clone()  # query frame is padding
    for idx in {0, nw - 1}:
        blocked[idx] |= rolled[idx][:, None] | rolled[idx][None, :]
    wrapped = torch.arange(w, device=rolled.device) < s
    blocked[0] |= wrapped[:, None] != wrapped[None, :]
    return blocked


def window_groups(blocked: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Group windows with identical frame masks: [(window indices, (W, W) mask)]."""
    groups: list[tuple[Tensor, Tensor]] = []
    remaining = torch.ones(blocked.shape[0], dtype=torch.bool, device=blocked.device)
    while bool(remaining.any()):
        first = int(remaining.nonzero()[0])
        same = remaining & (blocked == blocked[first]).flatten(1).all(1)
        groups.append((same.nonzero().flatten(), blocked[first]))
        remaining &= ~same
    return groups


def tokens_mask(frame_mask: Tensor, q_tokens: int, k_tokens: int) -> Tensor:
    """(W, W) frame mask -> (W*q_tokens, W*k_tokens), frame-major token order."""
    return frame_mask.repeat_interleave(q_tokens, 0).repeat_interleave(k_tokens, 1)


def split_windows(x: Tensor, layout: WindowLayout) -> Tensor:
    """(Tp, P, N, C) -> (W*P, N, Nw, C): tokens of each window, frame-major."""
    tp, p, n, c = x.shape
    nw, w = layout.num_windows, layout.window
    return x.view(nw, w, p, n, c).permute(1, 2, 3, 0, 4).reshape(w * p, n, nw, c)


def merge_windows(x: Tensor, layout: WindowLayout, per_frame: int) -> Tensor:
    """Inverse of ``split_windows``: (W*P, N, Nw, C) -> (Tp, P, N, C)."""
    _, n, nw, c = x.shape
    w = layout.window
    return x.view(w, per_frame, n, nw, c).permute(3, 0, 1, 2, 4).reshape(nw * w, per_frame, n, c)
