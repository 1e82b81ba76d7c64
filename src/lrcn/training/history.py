"""A run's history.csv: every epoch's figures, rewritten atomically after each epoch."""
from __future__ import annotations

from pathlib import Path

from ..files import atomic_write_text

# lr: the epoch's learning rate (TrainConfig.schedule); empty in rows of a run resumed from a
# state written before lrcn logged it.
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "lr")


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    lines = [",".join(HISTORY_FIELDS)]
    for row in history:
        lines.append(",".join(f"{row[k]:.6g}" if isinstance(row.get(k), float)
                              else str(row.get(k, "")) for k in HISTORY_FIELDS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_history(path: Path) -> list[dict[str, float]]:
    lines = Path(path).read_text().strip().splitlines()
    header = lines[0].split(",")
    return [{k: float(v) for k, v in zip(header, line.split(",")) if v} for line in lines[1:]]


__all__ = ["HISTORY_FIELDS", "write_history", "read_history"]
