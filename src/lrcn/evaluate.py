"""Honest evaluation: a checkpoint on clips it never trained on (the run's group-aware test
split by default), with scikit-learn's metrics, a JSON report and PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from .cache import Sample, prepare
from .checkpoint import Checkpoint
from .dataset import ClipDataset, discover, read_split
from .errors import LrcnError
from .files import atomic_write_text


def predict_cached(checkpoint: Checkpoint, clips, batch_size: int = 64) -> np.ndarray:
    """(N, classes) probabilities for cached clips, in order, on predict's engine."""
    from .engine import make_engine
    engine = make_engine(checkpoint)
    loader = torch.utils.data.DataLoader(ClipDataset(clips, checkpoint.class_names),
                                         batch_size=batch_size)
    out = [engine.probabilities(x.numpy()) for x, _ in loader]
    return np.concatenate(out) if out else np.zeros((0, len(checkpoint.class_names)))


def samples_for(checkpoint: Checkpoint, run_dir: Path | None, data: Path | None,
                part: str = "test") -> list[Sample]:
    """The clips to evaluate: a data folder's clips of the checkpoint's classes, or the run's
    split part."""
    if data is not None:
        _, samples = discover(data, [c for c in checkpoint.class_names
                                     if (Path(data) / c).is_dir()] or None)
        unknown = sorted({s.class_name for s in samples} - set(checkpoint.class_names))
        if unknown:
            raise LrcnError(f"class {unknown[0]!r} is not one the model knows "
                            f"({', '.join(checkpoint.class_names)})", data)
        return samples
    if run_dir is None or not (run_dir / "split.json").exists():
        raise LrcnError("no split.json beside the checkpoint: pass --data DIR", run_dir or "")
    samples = read_split(run_dir / "split.json")[part]
    if not samples:
        raise LrcnError(f"the run's {part} split is empty: pass --data DIR", run_dir)
    return samples


def evaluate(checkpoint: Checkpoint, samples: Sequence[Sample], out_dir: Path,
             cache_dir: Path | None = None, workers: int | None = None,
             progress: bool = True, history: Path | None = None) -> dict:
    """Evaluate on `samples`; write report.json, confusion_matrix.png (and curves.png when a
    training history is given) into out_dir; return the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips, failures = prepare(samples, checkpoint.frame_config, cache_dir=cache_dir,
                              workers=workers, progress=progress)
    if not clips:
        raise LrcnError("none of the evaluation videos could be read", out_dir)
    names = checkpoint.class_names
    probabilities = predict_cached(checkpoint, clips)
    y_true = np.array([names.index(c.sample.class_name) for c in clips])
    y_pred = probabilities.argmax(1)
    labels = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    # Group-level ("video-level" in UCF terms: the clips of one group are cut from one video):
    # mean probability over a group's clips.
    groups: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        groups.setdefault(clip.sample.group, []).append(i)
    group_correct = [probabilities[idx].mean(0).argmax() == y_true[idx[0]]
                     for idx in groups.values()]
    report = {
        "num_clips": len(clips),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1)),
        "group_accuracy": float(np.mean(group_correct)),
        "num_groups": len(groups),
        "classes": names,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(names)},
        "confusion_matrix": matrix.tolist(),
        "skipped": [{"path": str(s.path), "cause": cause} for s, cause in failures],
        "predictions": [{"path": str(c.sample.path), "true": c.sample.class_name,
                         "predicted": names[int(y_pred[i])],
                         "confidence": float(probabilities[i, y_pred[i]])}
                        for i, c in enumerate(clips)],
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1))
    plot_confusion(matrix, names, out_dir / "confusion_matrix.png", report["accuracy"])
    if history is not None and Path(history).exists():
        plot_curves(Path(history), out_dir / "curves.png")
    return report


def record_test_metrics(checkpoint_path: Path, report: dict) -> None:
    """Store the headline test figures in the checkpoint, for `lrcn info`."""
    from .checkpoint import update_info
    update_info(checkpoint_path, test_metrics={
        k: report[k] for k in ("accuracy", "macro_f1", "group_accuracy", "num_clips")})


def format_report(report: dict) -> str:
    names = report["classes"]
    width = max(12, max(len(n) for n in names) + 2)
    lines = [f"accuracy {report['accuracy']:.3f} on {report['num_clips']} clips "
             f"(group-level {report['group_accuracy']:.3f} on {report['num_groups']} groups), "
             f"macro F1 {report['macro_f1']:.3f}",
             f"{'class':<{width}}{'precision':>10}{'recall':>8}{'f1':>8}{'clips':>7}"]
    for name in names:
        row = report["per_class"][name]
        lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>8.3f}"
                     f"{row['f1']:>8.3f}{row['support']:>7d}")
    lines.append("confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"  {name:<{width}}" + " ".join(f"{v:4d}" for v in row))
    return "\n".join(lines)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: Path, accuracy: float) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay
    plt = _pyplot()
    size = max(4.5, 0.6 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ConfusionMatrixDisplay(matrix, display_labels=list(names)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45)
    ax.set_title(f"Confusion matrix (accuracy {accuracy:.3f})")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_curves(history_csv: Path, path: Path) -> None:
    from .train import read_history
    history = read_history(history_csv)
    if not history:
        return
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    val_losses = [row["val_loss"] for row in history]
    best_epoch = None if all(math.isnan(v) for v in val_losses) else \
        int(epochs[int(np.nanargmin(val_losses))])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "accuracy", "Accuracy")):
        ax.plot(epochs, [row[key] for row in history], label=f"train {key}")
        val = [row[f"val_{key}"] for row in history]
        if not all(math.isnan(v) for v in val):
            ax.plot(epochs, val, label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch ({best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    plt = _pyplot()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
