"""Shared argparse pieces of the `avis` commands: the help formatter (every option shows its
default), argument types that reject out-of-range values at parse time, and a device check.

Standard library only: argument errors appear before torch or PyAV are imported.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
# --precision: "auto" + avis.precision.PRECISIONS (spelled out: this module imports no torch)
PRECISION_CHOICES = ("auto", "fp32", "tf32", "bf16", "fp16")


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions written with line breaks keep them (else they are wrapped), and every
    option's help ends with its default, unless the help mentions the default already (the
    word "default", or the value in parentheses) or the default is None / False."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        shown = {str(default)} | ({f"{default:g}"} if isinstance(default, float) else set())
        if (
            "default" in help_text
            or any(f"({text})" in help_text for text in shown)  # "port (7860)"
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return action.help
        return help_text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose help always uses `HelpFormatter` (every subcommand, also those
    whose module passes another formatter class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)
        # accepted before and after the subcommand: `avis -v predict ...`, `avis predict -v ...`
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="debug logging; tracebacks of internal errors")


def _number(convert: Callable[[str], float], low: float | None, high: float | None,
            low_open: bool = False, what: str = "") -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{what} number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r}: a finite number is needed")
        if low is not None and (value <= low if low_open else value < low):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"{text}: must be {bound}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text}: must be <= {high:g}")
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def _integer(text: str) -> int:
    return int(text, 10)


probability = _number(float, 0.0, 1.0)  # a score threshold: 0 <= p <= 1
positive_float = _number(float, 0.0, None, low_open=True)  # > 0
MAX_SAMPLING_FPS = 120.0  # frames sampled per second: beyond any video's own rate
sampling_fps = _number(float, 0.0, MAX_SAMPLING_FPS, low_open=True)
MAX_LATENCY_S = 600.0  # online look-ahead (seconds)
latency_seconds = _number(float, 0.0, MAX_LATENCY_S)
MAX_WINDOW_FRAMES = 600  # online window: its mask features stay in memory (~14 MB a frame at 360p)
window_frames = _number(_integer, 0, MAX_WINDOW_FRAMES, what="n integer")  # 0 = automatic
positive_int = _number(_integer, 1, None, what="n integer")  # >= 1
non_negative_int = _number(_integer, 0, None, what="n integer")  # >= 0


def device(text: str) -> str:
    """A torch device name (cpu, cuda, cuda:N, mps): the syntax is checked here, whether the
    device exists by `avis.runtime.torch_device` once torch is imported."""
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda, cuda:N or mps")
    return text
