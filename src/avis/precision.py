"""Numeric precision of a run: one option, one context manager, for inference and training.

    with precision_context("bf16", device):
        outputs = model(...)

Modes (`--precision` of `avis predict`, `demo`, `train`; `VideoPredictor(precision=...)`):

- ``fp32``: strict float32. TF32 is switched OFF for CUDA matrix products and convolutions
  (PyTorch leaves TF32 convolutions on by default, which flips 0.02-0.08 % of mask pixels
  against the official outputs). Reproduces the goldens on any device. The CPU default.
- ``tf32``: float32 tensors, TF32 tensor-core products on CUDA (identical to fp32 on CPU).
- ``bf16`` / ``fp16``: ``torch.autocast`` to that dtype: linear layers, convolutions and
  matrix products run in the low dtype (on CUDA: on the tensor cores); TF32 is allowed for
  the float32 islands. fp16 on CUDA training uses a gradient scaler (the trainer).

float32 islands (where accuracy needs them): softmax, normalisation layers and losses follow
autocast's own float32 lists; the mask post-processing of inference (mask logits of the
video queries, the 0.5 probability threshold, the mask scores) runs outside autocast in
float32 (`float32_island`), so binarisation is not decided by bf16 rounding.

`default_precision(device)`: ``fp32`` on CPU (unchanged speed and outputs), ``bf16`` on
CUDA -- provisional: it awaits the H200 measurements of `benchmarks/gpu.py`
(docs/benchmarks.md, "GPU").
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["fp32", "tf32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def default_precision(device: str | torch.device) -> str:
    """fp32 on CPU; bf16 on CUDA (provisional until measured on a GPU)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def resolve_precision(precision: str | None, device: str | torch.device) -> str:
    """None or "auto" -> the device's default; else the checked mode."""
    if precision in (None, "auto"):
        return default_precision(device)
    return check_precision(precision)


def supported_precisions(device: str | torch.device) -> tuple[str, ...]:
    """The modes worth offering on `device` (for choosers such as `avis serve`'s page).

    CPU: fp32 and bf16, and fp16 where this PyTorch's CPU autocast takes float16 (tf32 is
    left out: on CPU it is fp32 under another name). CUDA: fp32 and fp16, tf32 on tensor-core
    GPUs with TF32 (compute capability 8.0+), bf16 where the GPU has it natively."""
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        modes = ["fp32"] + (["tf32"] if major >= 8 else [])
        modes += ["bf16"] if _cuda_bf16_native() else []
        return (*modes, "fp16")
    if device.type == "cpu":
        return ("fp32", "bf16") + (("fp16",) if _cpu_autocast_takes_fp16() else ())
    return ("fp32",)


def _cuda_bf16_native() -> bool:
    try:  # PyTorch < 2.4 has no `including_emulation` (and counts only native support)
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


@functools.cache
def _cpu_autocast_takes_fp16() -> bool:
    """Older PyTorch disables CPU autocast for float16 (with a warning); a 2x2 product tells."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast("cpu", dtype=torch.float16):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a mode (None: no autocast)."""
    return AUTOCAST_DTYPES.get(check_precision(precision))


@contextlib.contextmanager
def tf32_allowed(allowed: bool) -> Iterator[None]:
    """Set CUDA's TF32 switches (matmul and cuDNN) for the block, restore them after."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@contextlib.contextmanager
def precision_context(precision: str, device: str | torch.device) -> Iterator[None]:
    """Run the block in `precision` on `device` (TF32 switches and autocast; both restored)."""
    precision = check_precision(precision)
    device_type = torch.device(device).type
    dtype = autocast_dtype(precision)
    with tf32_allowed(precision != "fp32"):
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type, dtype=dtype):
                yield


@contextlib.contextmanager
def float32_island(device: str | torch.device) -> Iterator[None]:
    """Autocast off for the block (inputs must be cast to float32 by the caller)."""
    if torch.is_autocast_enabled(torch.device(device).type):
        with torch.autocast(torch.device(device).type, enabled=False):
            yield
    else:
        yield
