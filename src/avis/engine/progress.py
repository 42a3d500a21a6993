"""Training progress display: a rich progress bar (plain log lines off a terminal)."""

from __future__ import annotations

import sys
from typing import Any


def format_record(record: dict[str, Any]) -> str:
    parts = [f"{record['kind']} it {record['iteration']}"]
    for key, value in record.items():
        if key not in ("kind", "iteration") and isinstance(value, (int, float)):
            parts.append(f"{key} {value:.4g}")
    return "  ".join(parts)


class ProgressBar:
    """A rich progress bar with the loss and ETA (plain log lines when not on a terminal)."""

    def __init__(self, total: int, completed: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=sys.stderr)
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = self.progress.add_task("train", total=total, completed=completed, loss="-")
        self.progress.start()

    def advance(self, iteration: int, record: dict[str, Any] | None) -> None:
        if record and "loss" in record:
            self.progress.update(self.task, completed=iteration, loss=f"{record['loss']:.3f}")
        else:
            self.progress.update(self.task, completed=iteration)

    def close(self) -> None:
        self.progress.stop()
