"""Per-generation metrics: RUN_DIR/metrics.jsonl and TensorBoard scalars with the same names.

On resume from a checkpoint after ``start`` completed generations, lines for generations
>= start (written by the interrupted process after its last checkpoint) are dropped, and
TensorBoard is told to purge events from that step on, so both views show each generation
once, as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vsml_es.runs.run_dir import atomic_write_bytes

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill: everything after it is unreliable
    return rows


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLog:
    def __init__(self, run_dir: str | Path, tensorboard: bool, start_generation: int = 0):
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r.get("generation", -1) < start_generation]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._file = open(self.path, "a")
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(run_dir), purge_step=start_generation or None,
                                         flush_secs=10)

    def write(self, row: dict) -> None:
        row = {k: _jsonable(v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            step = row["generation"]
            for k, v in row.items():
                if k != "generation" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._writer.add_scalar(k, v, step)

    def flush(self) -> None:
        self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
