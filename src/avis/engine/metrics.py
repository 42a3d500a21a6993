"""Run-folder logging on the main process: JSONL metrics, optional TensorBoard, console lines.

`metrics.jsonl` holds one JSON object per line: training records
`{"kind": "train", "iteration": i, "loss": ..., <loss terms>, "lr": ..., ...}` and
evaluation records `{"kind": "eval", "iteration": i, "split": ..., <metric>: ...}`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
LOG = logging.getLogger("avis.train")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    return records


class MetricsWriter:
    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.path = run_dir / METRICS_FILE
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # imported only when asked
            except ImportError as err:  # pragma: no cover - depends on the environment
                LOG.warning("TensorBoard logging disabled: %s", err)
            else:
                self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def truncate_after(self, iteration: int) -> None:
        """Drop records newer than `iteration` (written by a run killed after its checkpoint)."""
        kept = [r for r in read_metrics(self.path.parent) if r.get("iteration", 0) <= iteration]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = record.get("kind", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "iteration":
                    self.tb.add_scalar(f"{prefix}/{key}", value, record["iteration"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
