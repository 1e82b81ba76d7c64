"""The PNG plots of a run and of a timeline, drawn with matplotlib (without a display) and
written atomically."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_path

# The colour of each class, by its index in the model's class list: matplotlib's tab10, written
# out so that the timeline PNG and the page (which gets them from GET /v1/model) use one list.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
UNKNOWN_COLOUR = "#c0c0c0"      # "unknown" (--reject-below): lighter than tab10's grey


def class_colours(classes: Sequence[str]) -> dict[str, str]:
    """Each class's colour (the palette repeats past 10 classes), and "unknown"'s."""
    return {"unknown": UNKNOWN_COLOUR,
            **{name: PALETTE[i % len(PALETTE)] for i, name in enumerate(classes)}}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: Path, accuracy: float) -> None:
    """The confusion matrix much as scikit-learn's ConfusionMatrixDisplay draws it (lrcn no
    longer depends on scikit-learn: evaluate.py): rows true, a Blues map, each count in white
    on the darker half (dark at the midpoint, where white vanished on a uniform matrix), whole
    counts never in e-notation, tick labels anchored under their columns."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.int64)
    size = max(4.5, 0.6 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    image = ax.imshow(matrix, interpolation="nearest", cmap="Blues")
    low, high = image.cmap(0.0), image.cmap(1.0)
    middle = (matrix.max() + matrix.min()) / 2
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, f"{count:d}", ha="center", va="center",
                color=low if count > middle else high)
    ticks = np.arange(len(names))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=list(names), yticklabels=list(names),
           xlabel="Predicted label", ylabel="True label")
    ax.set_ylim(len(names) - 0.5, -0.5)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_title(f"Confusion matrix (accuracy {accuracy:.3f})")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, the best epoch marked."""
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


def plot_reliability(before: list[dict], after: list[dict], temperature: float,
                     eces: tuple[float, float], path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin (calibrate.reliability),
    before and after temperature scaling; a calibrated model lies on the diagonal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for rows, label, marker in ((before, f"before (ECE {eces[0]:.3f})", "o"),
                                (after, f"after, T={temperature:.2f} (ECE {eces[1]:.3f})",
                                 "s")):
        used = [r for r in rows if r["count"]]
        ax.plot([r["confidence"] for r in used], [r["accuracy"] for r in used],
                marker=marker, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_compare(rows: list[dict], path: Path) -> None:
    """`lrcn compare`: each model's mean accuracy per protocol, with its spread (std)."""
    plt = _pyplot()
    models = list(dict.fromkeys(r["model"] for r in rows))
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    width = 0.8 / len(protocols)
    fig, ax = plt.subplots(figsize=(1.6 * len(models) + 2, 4), dpi=110)
    for j, protocol in enumerate(protocols):
        found = {r["model"]: r for r in rows if r["protocol"] == protocol}
        xs = [i + (j - (len(protocols) - 1) / 2) * width for i in range(len(models))]
        ax.bar(xs, [found[m]["accuracy_mean"] if m in found else 0 for m in models], width,
               yerr=[found[m]["accuracy_std"] if m in found else 0 for m in models],
               capsize=4, label=f"{protocol} split")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy (mean, std over repeats)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path, dpi: int | None = None) -> None:
    """Written atomically: a reader never sees half a PNG."""
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


def plot_timeline(timeline, path: Path) -> None:
    """A timeline's smoothed probabilities over time, its segments shaded by label."""
    plt = _pyplot()
    centres = [(w.start + w.end) / 2 for w in timeline.windows]
    colours = class_colours(timeline.classes)
    fig, ax = plt.subplots(figsize=(12, 4))
    for seg in timeline.segments:
        ax.axvspan(seg.start, seg.end, color=colours.get(seg.label, UNKNOWN_COLOUR),
                   alpha=0.15, lw=0)
    for i, name in enumerate(timeline.classes):
        ax.plot(centres, timeline.smoothed[:, i], color=colours[name], label=name, lw=1.6)
    ax.set_xlim(0, timeline.facts["duration"])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability (smoothed)")
    ax.set_title(f"{Path(timeline.facts['video']).name}: segments shaded by label")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path, dpi=110)


__all__ = ["PALETTE", "UNKNOWN_COLOUR", "class_colours", "plot_confusion", "plot_curves",
           "plot_timeline"]
