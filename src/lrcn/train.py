"""Training: a folder of videos -> a run folder with a checkpoint, its settings, the split and
every epoch's figures.

The loop is the seed tutorial's `model.fit`: Adam (Keras's epsilon), cross-entropy, batch 4,
up to 70 epochs, shuffled each epoch, early stopping on validation loss with patience 15 that
restores the best weights. The best weights are on disk (atomically) from the moment they are
found, so an interrupted run still leaves its best model behind.
"""
from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .cache import CachedClip, prepare
from .checkpoint import CHECKPOINT_NAME, save_checkpoint, update_info
from .config import FrameConfig, SplitConfig, TrainConfig, model_config_for, to_dict
from .dataset import Sample, load_parts, read_split, write_split
from .errors import LrcnError
from .files import atomic_write_text
from .history import write_history
from .devices import autocast, resolve_device
from .loader import clip_batches
from .model import LRCN, clips_to_input, count_trainable
from .resume import STATE_NAME, load_state, save_state


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    skipped: list[tuple[str, str]]
    parts: dict[str, list[Sample]]       # the split: samples by part


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def report_skipped(failures: Sequence[tuple[str, str]], out=sys.stderr) -> None:
    """Unreadable videos are listed by name and cause, never dropped silently."""
    if failures:
        print(f"skipped {len(failures)} unreadable video(s):", file=out)
        for path, cause in failures:
            print(f"  {path}: {cause}", file=out)


# Clips per forward/backward pass inside a training step on the CPU. The CNN's activations for
# a few clips stay in the CPU's caches; for a whole batch of 32 they do not (conv1's output alone
# is 160 MB), and the step runs at two thirds of the speed (bench/train_infer.py). Gradients are
# summed over the chunks, so the step is the same maths as one pass over the batch. A GPU wants
# the opposite: the whole batch in one pass.
CHUNK_CLIPS = 2


def make_optimizer(model: LRCN, lr: float) -> torch.optim.Optimizer:
    """Adam with Keras's epsilon (1e-7; PyTorch's default is 1e-8). The fused kernel updates all
    ten parameter tensors in one call: 0.2 ms instead of 1 ms per step, which matters at batch 4."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, eps=1e-7, fused=True)
    except (RuntimeError, TypeError):  # a torch (or device) without fused Adam
        return torch.optim.Adam(params, lr=lr, eps=1e-7)


def _chunk(model: LRCN, size: int, chunk_clips: int | None) -> int:
    if model.config.batchnorm:
        return size        # batch normalisation makes the clips of a batch interact
    if chunk_clips is None:
        chunk_clips = CHUNK_CLIPS if next(model.parameters()).device.type == "cpu" else size
    return chunk_clips


def train_step(model: LRCN, optimizer: torch.optim.Optimizer, clips: torch.Tensor,
               labels: torch.Tensor, chunk_clips: int | None = None, precision: str = "fp32",
               scaler=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of uint8 clips on the model's device. Returns (summed
    data loss, correct count) as tensors on the device: reading them is left to the caller,
    once per epoch, so that a GPU never waits for the host between steps.

    The loss is the batch mean, as in Keras; it is computed and back-propagated chunk by
    chunk (each chunk's summed loss divided by the batch size), which gives the same gradients
    as the whole batch at once because clips do not interact in the model. `precision`
    bf16/fp16 runs the forward pass under autocast; fp16 scales the loss (`scaler`).
    """
    model.train()
    size = len(labels)
    chunk_clips = _chunk(model, size, chunk_clips)
    device = clips.device
    optimizer.zero_grad(set_to_none=True)
    # Summed in float64, as Python floats summed it before (MPS has no float64).
    total = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64,
                        device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, size, chunk_clips):
        part = slice(start, start + chunk_clips)
        with autocast(device, precision):
            logits = model(clips_to_input(clips[part]))
        loss = nn.functional.cross_entropy(logits.float(), labels[part], reduction="sum")
        scaled = loss / size
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach()
        correct += (logits.detach().argmax(1) == labels[part]).sum()
    if model.config.l2:
        penalty = model.regularization_loss()
        (scaler.scale(penalty) if scaler is not None else penalty).backward()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total, correct


@torch.no_grad()
def eval_batch(model: LRCN, clips: torch.Tensor, labels: torch.Tensor,
               chunk_clips: int = 8, precision: str = "fp32"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation loss (summed) and correct count, as tensors. In chunks on the CPU: a whole
    batch of 64 clips would hold 330 MB of first-layer activations at once, and the peak
    memory of training would depend on the batch instead of staying flat."""
    model.eval()
    if clips.device.type != "cpu":
        chunk_clips = max(chunk_clips, len(labels))
    with autocast(clips.device, precision):
        logits = torch.cat([model(clips_to_input(clips[i:i + chunk_clips]))
                            for i in range(0, len(labels), chunk_clips)]).float()
    loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
    return loss, (logits.argmax(1) == labels).sum()


def run_epoch(model: LRCN, loader, optimizer=None, desc: str = "", progress: bool = False,
              precision: str = "fp32", scaler=None) -> tuple[float, float]:
    """One pass over a loader of (uint8 clips, labels) batches; trains when given an optimizer.
    Returns (mean loss, accuracy), the loss being the data loss without the L2 term, as Keras
    reports it."""
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for step, (clips, labels) in enumerate(bar):
        if optimizer is not None:
            loss, right = train_step(model, optimizer, clips, labels, precision=precision,
                                     scaler=scaler)
        else:
            loss, right = eval_batch(model, clips, labels, precision=precision)
        total_loss = total_loss + loss
        correct = correct + right
        seen += len(labels)
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(total_loss) / seen:.4f}",
                            acc=f"{int(correct) / seen:.3f}")
    return float(total_loss) / max(seen, 1), int(correct) / max(seen, 1)


@dataclass
class TrainingData:
    """A data set made ready for training: its classes, its split (samples by part), the
    decoded clips by part (in the frame cache), and the files skipped, with the cause."""
    root: Path
    class_names: list[str]
    parts: dict[str, list[Sample]]
    clips: dict[str, list[CachedClip]]
    skipped: list[tuple[str, str]]


def prepare_data(data_root: str | Path, run_dir: Path, classes: Sequence[str] | None = None,
                 frames: FrameConfig = FrameConfig(), split: SplitConfig = SplitConfig(),
                 cache_dir: Path | None = None, workers: int | None = None,
                 progress: bool = True, log=print, ucf_split: int | None = None,
                 lists: Path | None = None,
                 fixed: tuple[list[str], dict[str, list[Sample]]] | None = None,
                 on_split=None) -> TrainingData:
    """Find the clips, split them (or take the `fixed` split: cross-validation folds), write
    split.json into the run folder, call `on_split(class names)`, and decode every clip into
    the frame cache (the test clips too, so evaluation finds them there). Unreadable files
    are reported and skipped."""
    data_root = Path(data_root)
    missing: list[tuple[str, str]] = []
    if fixed is not None:
        (class_names, parts), how = fixed, "given folds"
    else:
        class_names, parts, missing, how = load_parts(data_root, classes, split, ucf_split,
                                                      lists)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_split(run_dir / "split.json", data_root if data_root.is_dir() else data_root.parent,
                parts)
    total = sum(len(v) for v in parts.values())
    log(f"data: {total} clips in {len(class_names)} classes "
        f"({', '.join(class_names)}); {how}: train {len(parts['train'])}, "
        f"val {len(parts['val'])}, test {len(parts['test'])} clips")
    if on_split is not None:
        on_split(class_names)

    clips, failures = prepare(parts["train"] + parts["val"] + parts["test"], frames,
                              cache_dir=cache_dir, workers=workers, progress=progress)
    skipped = missing + [(str(sample.path), cause) for sample, cause in failures]
    report_skipped(skipped)
    part_of = {sample.path: part for part, members in parts.items() for sample in members}
    by_part = {part: [c for c in clips if part_of[c.sample.path] == part] for part in parts}
    untrained = [n for n in class_names if not any(c.sample.class_name == n
                                                   for c in by_part["train"])]
    if untrained:
        raise LrcnError(f"no readable training clips for class {untrained[0]!r}", data_root)
    return TrainingData(data_root, class_names, parts, by_part, skipped)


@dataclass
class FitResult:
    best_epoch: int
    best: float              # the monitored figure at the best epoch
    monitor: str             # "val_loss", or "loss" when there are no validation clips
    history: list[dict[str, float]]


def fit(model: LRCN, data: TrainingData, config: TrainConfig, save_best, run_dir: Path,
        progress: bool = True, log=print, resume: bool = False) -> FitResult:
    """Keras's `model.fit` with early stopping: an epoch over the shuffled training clips, then
    validation; `save_best(model, extra info)` is called whenever the monitored loss improves
    (so the best weights are on disk from the moment they are found); training stops after
    `config.patience` epochs without improvement. history.csv is rewritten every epoch, and
    so is the whole training state (resume.py), from which `resume=True` continues."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config.lr)
    train_loader = clip_batches(data.clips["train"], data.class_names, config.batch_size,
                                device, shuffle=True, generator=generator)
    val_loader = clip_batches(data.clips["val"], data.class_names, 64, device)
    # fp16 needs its loss scaled (its range is narrow); bf16 has fp32's range.
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    monitor = "val_loss" if len(data.clips["val"]) else "loss"
    if monitor == "loss":
        log("warning: no validation clips (too few groups); early stopping watches training loss")
    history: list[dict[str, float]] = []
    best, best_epoch, waited, stopped = math.inf, 0, 0, False
    state_path = run_dir / STATE_NAME
    if resume and state_path.exists():
        done = load_state(state_path, model, optimizer, generator)
        history, best, best_epoch = done["history"], done["best"], done["best_epoch"]
        waited, stopped = done["waited"], done["stopped"]
        log(f"resuming after epoch {len(history)} (best epoch so far {best_epoch})")
    for epoch in range(len(history) + 1, config.epochs + 1):
        if stopped:
            break
        start = time.perf_counter()
        loss, accuracy = run_epoch(model, train_loader, optimizer,
                                   desc=f"epoch {epoch}/{config.epochs}", progress=progress,
                                   precision=config.precision, scaler=scaler)
        val_loss, val_accuracy = (run_epoch(model, val_loader, precision=config.precision)
                                  if len(data.clips["val"]) else (math.nan, math.nan))
        row = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss,
               "val_accuracy": val_accuracy, "seconds": time.perf_counter() - start}
        history.append(row)
        write_history(run_dir / "history.csv", history)
        current = row[monitor]
        improved = current < best
        log(f"epoch {epoch:3d}  loss {loss:.4f}  acc {accuracy:.3f}  val_loss {val_loss:.4f}  "
            f"val_acc {val_accuracy:.3f}  {row['seconds']:.1f}s{'  *' if improved else ''}")
        if improved:
            best, best_epoch, waited = current, epoch, 0
            save_best(model, {"best_epoch": epoch, f"best_{monitor}": current,
                              "val_accuracy": val_accuracy})
        else:
            waited += 1
            stopped = waited >= config.patience
        save_state(state_path, model, optimizer, generator,
                   {"history": history, "best": best, "best_epoch": best_epoch,
                    "waited": waited, "stopped": stopped})
        if stopped:
            log(f"early stopping: {monitor} has not improved for {config.patience} epochs; "
                f"best weights are from epoch {best_epoch}")
    return FitResult(best_epoch, best, monitor, history)


def train(data_root: str | Path, run_dir: str | Path, classes: Sequence[str] | None = None,
          frames: FrameConfig = FrameConfig(), model_options: dict[str, Any] | None = None,
          split: SplitConfig = SplitConfig(), config: TrainConfig = TrainConfig(),
          cache_dir: Path | None = None, workers: int | None = None, progress: bool = True,
          log=print, ucf_split: int | None = None, lists: Path | None = None,
          fixed: tuple[list[str], dict[str, list[Sample]]] | None = None,
          resume: bool = False) -> TrainResult:
    """Train on `data_root`: a folder per class, a `path,label` list file, or (with ucf_split)
    a folder with the official UCF101 split lists. `fixed` = (classes, parts) bypasses the
    split (cross-validation folds). The checkpoint holds the best epoch's weights
    (restore_best_weights=True). `resume`: continue from the run folder's training state,
    if it has one (see resume.py; `resume_settings` reads a run's settings back)."""
    run_dir = Path(run_dir)
    device = resolve_device(config.device)   # a device that is not there: before any decoding
    configs: list = []

    def write_settings(class_names: list[str]) -> None:
        """config.json, before any decoding: a run killed in its cache fill can resume."""
        model_config = model_config_for(frames, len(class_names), **(model_options or {}))
        settings = {"data": str(Path(data_root).resolve()), "classes": class_names,
                    "frames": to_dict(frames), "model": to_dict(model_config),
                    "split": to_dict(split), "train": to_dict(config),
                    "cache_dir": str(cache_dir) if cache_dir else None}
        atomic_write_text(run_dir / "config.json", json.dumps(settings, indent=2))
        configs.append(model_config)

    data = prepare_data(data_root, run_dir, classes, frames, split, cache_dir, workers,
                        progress, log, ucf_split, lists, fixed, on_split=write_settings)
    model_config = configs[0]

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    model = LRCN(model_config)
    model.seed_dropout(config.seed)
    model.to(device)
    log(f"model: LRCN, {count_trainable(model):,} trainable parameters, on {device}"
        f"{'' if config.precision == 'fp32' else ' in ' + config.precision}")
    clip_seconds = _clip_seconds(data.clips["train"])
    info = {"data": str(data.root.resolve()), "run_dir": str(run_dir.resolve()),
            "clips": {part: len(clips) for part, clips in data.clips.items()}}
    checkpoint_path = run_dir / CHECKPOINT_NAME

    def save_best(best_model: LRCN, entries: dict) -> None:
        save_checkpoint(checkpoint_path, best_model, frames, data.class_names,
                        {**info, **entries}, clip_seconds=clip_seconds)

    try:
        result = fit(model, data, config, save_best, run_dir, progress, log, resume)
    except KeyboardInterrupt:
        if (run_dir / STATE_NAME).exists():
            log(f"interrupted: the state after the last whole epoch is in {run_dir / STATE_NAME}"
                f"; continue with: lrcn train --resume {run_dir}")
        raise
    update_info(checkpoint_path, **info, best_epoch=result.best_epoch,
                **{f"best_{result.monitor}": result.best}, epochs_run=len(result.history),
                val_accuracy=result.history[result.best_epoch - 1]["val_accuracy"])
    return TrainResult(run_dir, checkpoint_path, result.best_epoch, len(result.history),
                       result.history, data.skipped, data.parts)


def _clip_seconds(clips: Sequence[CachedClip]) -> float:
    """The typical time a training clip spans: what the model's 20 frames cover. Long-video
    inference uses it to sample windows at the time scale the model was trained on."""
    durations = [c.duration for c in clips if c.duration > 0]
    return round(statistics.median(durations), 3) if durations else 0.0


def resume_settings(run_dir: str | Path) -> dict[str, Any]:
    """The keyword arguments of `train` that a run folder's config.json recorded, for
    `lrcn train --resume RUN`."""
    from .config import FrameConfig as Frames, ModelConfig, SplitConfig as Split, from_dict
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise LrcnError("not a run folder (no config.json): nothing to resume", run_dir)
    try:
        saved = json.loads(path.read_text())
        model = to_dict(from_dict(ModelConfig, saved["model"]))
        return {"data_root": saved["data"], "run_dir": run_dir, "classes": saved["classes"],
                "frames": from_dict(Frames, saved["frames"]),
                "model_options": {k: v for k, v in model.items() if k not in
                                  ("num_classes", "num_frames", "height", "width")},
                "split": from_dict(Split, saved["split"]),
                "config": from_dict(TrainConfig, saved["train"]),
                "cache_dir": Path(saved["cache_dir"]) if saved.get("cache_dir") else None,
                # the split as it was made (by group, from official lists or a fold)
                "fixed": (saved["classes"], read_split(run_dir / "split.json")),
                "resume": True}
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise LrcnError(f"damaged config.json ({exc})", run_dir) from None


__all__ = ["train", "prepare_data", "fit", "TrainResult", "TrainingData", "run_epoch",
           "train_step", "make_optimizer", "report_skipped", "resume_settings"]
