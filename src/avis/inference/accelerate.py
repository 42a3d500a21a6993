"""Opt-in CPU speed-ups for inference that keep the model's outputs.

``compile_for_inference(model, parts=("backbone", "pixel_decoder"))`` makes the named sub-modules of an
``AVISM`` run through ``torch.compile`` (Inductor, with weight freezing) whenever they are
called without autograd in eval mode; in training, with autograd, or when compiling fails
(no C++ compiler, an unsupported op, an old PyTorch) they run eagerly as before. Measured on
the R50 preset on a 2-core CPU (docs/benchmarks.md, "Performance"): the compiled backbone and
pixel decoder are ~1.3x faster than their eager forms (the ResNet-50's outputs identical, the
pixel decoder's equal up to float rounding); end to end at T = 18 the compiled model ran at
52-60 % of the machine's GEMM floor, the eager one at 39-42 %. Compiling costs ~1-2 min per new chunk
shape (a video usually has two: full chunks and the last one), cached on disk by PyTorch
across runs. The frame decoder is slower compiled at the default chunk size, hence the default.

    model = compile_for_inference(build_avism(cfg).eval())
    prediction = predict_frames(model, frames, audio)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

LOG = logging.getLogger(__name__)
DEFAULT_PARTS = ("backbone", "pixel_decoder")
COMPILABLE_PARTS = ("backbone", "pixel_decoder", "frame_decoder")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")


def compile_available() -> bool:
    """Whether this PyTorch has ``torch.compile`` (Inductor needs a C++ compiler on CPU)."""
    return hasattr(torch, "compile")


class _CompiledForward:
    """A module's forward that uses a compiled version in no-grad eval calls, eager otherwise."""

    def __init__(self, module: nn.Module, eager: Callable[..., Any], mode: str | None = None) -> None:
        self.module = module
        self.eager = eager
        self.compiled = torch.compile(eager, dynamic=False, mode=mode)
        self.failed = False
        # CUDA graphs reuse their output buffers: each call starts a new step, so the
        # previous call's outputs (a finished chunk's) may be overwritten, never the current
        self.cuda_graphs = mode == "reduce-overhead"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed or self.module.training or torch.is_grad_enabled():
            return self.eager(*args, **kwargs)
        try:
            from torch._inductor import config as inductor_config

            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with inductor_config.patch(freezing=True):  # parameters are constants here
                return self.compiled(*args, **kwargs)
        except Exception as err:  # any compiler failure: fall back to eager for good
            self.failed = True
            LOG.warning(
                "torch.compile failed for %s (%s: %s); running it eagerly",
                type(self.module).__name__,
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
            return self.eager(*args, **kwargs)


def compile_for_inference(
    model: nn.Module, parts: Sequence[str] = DEFAULT_PARTS, mode: str | None = None
) -> nn.Module:
    """Compile the named parts of ``model`` (an ``AVISM``) for no-grad inference, in place.

    ``mode``: ``torch.compile``'s mode -- None (default), "reduce-overhead" (CUDA graphs:
    pair it with the predictor's static chunk shapes, on by default on CUDA) or
    "max-autotune" (CUDA kernel tuning; long first call).

    Returns the model. Does nothing (with a log line) when ``torch.compile`` is unavailable.
    Outputs are those of the eager model up to float rounding (identical for the backbone
    in our measurements); the golden parity tests run the eager model.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {COMPILE_MODES}")
    unknown = sorted(set(parts) - set(COMPILABLE_PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; expected some of {COMPILABLE_PARTS}")
    if not compile_available():
        LOG.info("torch.compile is not available in torch %s; running eagerly", torch.__version__)
        return model
    for name in parts:
        module = getattr(model, name)
        if isinstance(module.forward, _CompiledForward):
            continue
        module.forward = _CompiledForward(module, module.forward, mode)
    return model


def uncompile(model: nn.Module) -> nn.Module:
    """Undo ``compile_for_inference``: every part runs its eager forward again."""
    for name in COMPILABLE_PARTS:
        module = getattr(model, name, None)
        if module is not None and isinstance(module.forward, _CompiledForward):
            del module.forward  # the instance attribute; the class's forward is back
    return model
