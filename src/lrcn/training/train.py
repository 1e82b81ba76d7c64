"""Training: a folder of videos -> a run folder with a checkpoint, its settings, the split and
every epoch's figures.

The loop is the seed tutorial's `model.fit`: Adam (Keras's epsilon), cross-entropy, batch 4,
up to 70 epochs, shuffled each epoch, early stopping on validation loss with patience 15 that
restores the best weights. The best weights are on disk (atomically) from the moment they are
found, so an interrupted run still leaves its best model behind.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.cache import CachedClip
from ..console import plural
from ..models.checkpoint import (CHECKPOINT_NAME, init_from, load_checkpoint, save_checkpoint,
                                 update_info)
from ..config import TrainConfig, candidate_frames
from ..data.check import report_skipped
from ..data.dataset import Sample
from ..errors import LrcnError
from ..files import atomic_write_text
from .history import write_history
from ..devices import keep_freed_memory, resolve_device
from ..distributed import World, gather, group_failure, rank_seed, setup, teardown
from ..data.loader import clip_batches
from ..data.augment import Augmenter, CANDIDATES
from ..data.features import cached_features
from ..models.base import count_trainable
from .job import TrainingJob, remove_run_files
from .prepare import TrainingData, prepare_data, prepare_shared
from .resume import STATE_NAME, dropout_states, load_state, save_state
from .steps import check_finite, epoch_lr, make_optimizer, run_epoch
from ..models.registry import build_model, check_settings, get_spec


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    skipped: list[tuple[str, str]]
    parts: dict[str, list[Sample]]       # the split: samples by part
    rank: int = 0                        # this process's rank (0 writes the run folder)
    resumed_after: int = 0               # epochs done before this process started (resumed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_inputs(data: TrainingData, model, job: TrainingJob, device: torch.device, log,
                    world: World) -> TrainingData:
    """What the training and validation loaders read: with temporal jitter, the training
    clips' candidate frames (CANDIDATES per segment, decoded into the frame cache like any
    other setting); for a model with a frozen CNN, the cached features of those frames."""
    train = data.clips["train"]
    progress = job.progress
    candidates = 1
    if job.train.temporal_jitter:
        candidates = CANDIDATES
        decoded, failures = prepare_shared([c.sample for c in train],
                                           candidate_frames(job.frames, CANDIDATES), job, world)
        if failures:   # the file decoded at the plain setting: report, do not drop silently
            raise LrcnError(f"decoding {CANDIDATES}x frames for temporal jitter failed "
                            f"({failures[0][1]})", failures[0][0].path)
        train_inputs = [c.frames_path for c in decoded]
    else:
        train_inputs = [c.frames_path for c in train]
    inputs = {"train": train_inputs}
    if get_spec(model.config.name).cached_features:
        as_clips = [dataclasses.replace(c, frames_path=p) for c, p in zip(train, train_inputs)]
        inputs = {"train": cached_features(model, as_clips, device, progress and world.main,
                                           log, world),
                  "val": cached_features(model, data.clips["val"], device,
                                         progress and world.main, log, world)}
    return dataclasses.replace(data, inputs=inputs, candidates=candidates)


def class_weights(data: TrainingData, device: torch.device) -> torch.Tensor:
    """--balance: each class weighted by the inverse of its share of the training clips
    (weights average to one over the clips, so the loss keeps its scale)."""
    counts = torch.zeros(len(data.class_names))
    for clip in data.clips["train"]:
        counts[data.class_names.index(clip.sample.class_name)] += 1
    weights = counts.sum() / (len(counts) * counts.clamp(min=1))
    return weights.to(device)


@dataclass
class FitResult:
    best_epoch: int
    best: float              # the monitored figure at the best epoch
    monitor: str             # "val_loss", or "loss" when there are no validation clips
    history: list[dict[str, float]]
    resumed_after: int = 0   # epochs that were done before (a resumed run)


def fit(model, data: TrainingData, config: TrainConfig, save_best, run_dir: Path,
        progress: bool = True, log=print, resume: bool = False,
        world: World = World(), extend: bool = False) -> FitResult:
    """Keras's `model.fit` with early stopping: an epoch over the shuffled training clips, then
    validation; `save_best(model, extra info)` is called whenever the monitored loss improves
    (so the best weights are on disk from the moment they are found); training stops after
    `config.patience` epochs without improvement. history.csv is rewritten every epoch, and
    so is the whole training state (resume.py), from which `resume=True` continues;
    `extend`: a run that early stopping had stopped trains on to `config.epochs`, its patience
    counted again from there (the best so far stays the one to beat).

    With several processes the model is wrapped in DistributedDataParallel; every rank steps
    through the same global batches (its share of each), the epoch's figures are summed over
    the ranks, so early stopping decides the same everywhere, and rank 0 alone writes."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        keep_freed_memory()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config.lr)
    # a model's groups may learn at their own share of the rate (effnet's backbone at a tenth)
    lr_scales = [group["lr"] / config.lr for group in optimizer.param_groups]
    net = None
    if world.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    augmenter = Augmenter(config, data.candidates, world.rank)
    train_loader = clip_batches(data.clips["train"], data.class_names, config.batch_size,
                                device, shuffle=True, generator=generator, rank=world.rank,
                                world=world.size, arrays=data.inputs.get("train"),
                                transform=augmenter if augmenter.active else None)
    val_loader = clip_batches(data.clips["val"], data.class_names, 64, device,
                              rank=world.rank, world=world.size, arrays=data.inputs.get("val"))
    weights = class_weights(data, device) if config.balance else None
    # fp16 needs its loss scaled (its range is narrow); bf16 has fp32's range.
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    monitor = "val_loss" if len(data.clips["val"]) else "loss"
    if monitor == "loss":
        log("warning: no validation clips (too few groups); early stopping watches training loss")
    history: list[dict[str, float]] = []
    best, best_epoch, waited, stopped = math.inf, 0, 0, False
    state_path = run_dir / STATE_NAME
    if resume and state_path.exists():
        done = load_state(state_path, model, optimizer, generator, rank=world.rank,
                          world=world.size)
        history, best, best_epoch = done["history"], done["best"], done["best_epoch"]
        waited, stopped = done["waited"], done["stopped"]
        if extend and stopped:
            waited, stopped = 0, False
        if stopped or len(history) >= config.epochs:
            log(f"training had ended (best epoch {best_epoch} of {len(history)}); finishing "
                "what was stopped after it")
        else:
            log(f"resuming after epoch {len(history)} (best epoch so far {best_epoch}); "
                f"training to epoch {config.epochs}")
    resumed_after = len(history)
    for epoch in range(len(history) + 1, config.epochs + 1):
        if stopped:
            break
        start = time.perf_counter()
        augmenter.start_epoch(epoch)
        lr = epoch_lr(config, epoch)
        if config.schedule != "constant":    # a constant run keeps the optimizer's own rates
            for group, scale in zip(optimizer.param_groups, lr_scales):
                group["lr"] = lr * scale
        loss, accuracy = run_epoch(model, train_loader, optimizer,
                                   desc=f"epoch {epoch}/{config.epochs}",
                                   progress=progress and world.main,
                                   precision=config.precision, scaler=scaler, net=net,
                                   world=world, class_weights=weights)
        val_loss, val_accuracy = (run_epoch(model, val_loader, precision=config.precision,
                                            world=world)
                                  if len(data.clips["val"]) else (math.nan, math.nan))
        watched = {"loss": loss, "val_loss": val_loss} if monitor == "val_loss" else \
            {"loss": loss}
        check_finite(epoch, watched, model, config.lr, best_epoch)
        row = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss,
               "val_accuracy": val_accuracy, "seconds": time.perf_counter() - start,
               "lr": lr}
        history.append(row)
        if world.main:
            write_history(run_dir / "history.csv", history)
        current = row[monitor]
        improved = current < best
        log(f"epoch {epoch:3d}  loss {loss:.4f}  acc {accuracy:.3f}  val_loss {val_loss:.4f}  "
            f"val_acc {val_accuracy:.3f}  {row['seconds']:.1f}s{'  *' if improved else ''}")
        if improved:
            best, best_epoch, waited = current, epoch, 0
            if world.main:
                save_best(model, {"best_epoch": epoch, f"best_{monitor}": current,
                                  "val_accuracy": val_accuracy})
        else:
            waited += 1
            stopped = waited >= config.patience
        # every rank's dropout streams, written by rank 0 (a collective: all ranks take part)
        dropout = gather(dropout_states(model), world)
        if world.main:
            save_state(state_path, model, optimizer, generator,
                       {"history": history, "best": best, "best_epoch": best_epoch,
                        "waited": waited, "stopped": stopped}, dropout_by_rank=dropout)
        if stopped:
            log(f"early stopping: {monitor} has not improved for "
                f"{plural(config.patience, 'epoch')}; "
                f"best weights are from epoch {best_epoch}")
    return FitResult(best_epoch, best, monitor, history, resumed_after)


def train(job: TrainingJob, log=print) -> TrainResult:
    """Train as `job` says, on `job.data`: a folder per class, a `path,label` list file, or
    (with job.ucf_split) a folder with the official UCF101 split lists; `job.fixed` =
    (classes, parts) bypasses the split (cross-validation folds). The run folder is `job.out`;
    its checkpoint holds the best epoch's weights (restore_best_weights=True). `job.resume`:
    continue from the run folder's training state, if it has one (resume.py; job.job_from_run
    reads a run's job back)."""
    run_dir, frames, config = job.out, job.frames, job.train
    # settings a model cannot honour, and a device that is not there: before any decoding
    check_settings(job.model_config(2), frames.channel_order, config)
    device = resolve_device(config.device)
    world = setup(device.type)                # torchrun's process group, or a world of one
    if world.distributed and device.type == "cuda":
        device = torch.device(f"cuda:{world.local_rank}")   # one GPU per process
        torch.cuda.set_device(device)
    if not world.main:
        log = _silent

    def write_settings(class_names: list[str]) -> None:
        """config.json, before any decoding: a run killed in its cache fill can resume."""
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json",
                          json.dumps(job.saved_settings(class_names, world.size), indent=2))

    # A run that fails (bad data, an error) before its first whole epoch leaves nothing that
    # looks like a run (_discard). A kill leaves its folder, to resume; so does a failure
    # after an epoch, whose state can be resumed.
    existed = run_dir.exists() if world.main and not job.resume else None
    finished = False
    try:
        data = prepare_data(job, log, on_classes=write_settings, world=world)
        model_config = job.model_config(len(data.class_names))
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        seed_everything(config.seed)
        model = build_model(model_config, pretrained=True)
        if job.init_from is not None and not (job.resume and (run_dir / STATE_NAME).exists()):
            log(f"starting from {job.init_from}: " + init_from(
                model, load_checkpoint(job.init_from), data.class_names))
        # Rank 0 draws the dropout masks one process would draw; the others streams of their own.
        model.seed_dropout(rank_seed(config.seed, world.rank))
        model.to(device)
        data = training_inputs(data, model, job, device, log, world)
        log(f"model: {model_config.name}, {count_trainable(model):,} trainable parameters, "
            f"on {device}"
            f"{'' if config.precision == 'fp32' else ' in ' + config.precision}"
            f"{f', {world.size} processes' if world.distributed else ''}")
        result = _train_model(model, data, job, log, world)
        finished = True
        return result
    except Exception as exc:
        if existed is not None and not (run_dir / STATE_NAME).exists():
            _discard(run_dir, existed)
        if isinstance(exc, RuntimeError):   # another process stalled or died: one line
            raise (group_failure(exc, world) or exc) from None
        raise
    finally:
        teardown(finished)


def _discard(run_dir: Path, existed: bool) -> None:
    """What a run that failed before its first epoch wrote: its folder, or in a folder that
    was there already, the run's files (RUN_FILES; nothing else; a run an --overwrite set
    aside comes back: job.replacing)."""
    if existed:
        remove_run_files(run_dir)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0: one voice is enough."""


def _train_model(model, data: TrainingData, job: TrainingJob, log, world: World) -> TrainResult:
    run_dir, frames, config = job.out, job.frames, job.train
    clip_seconds = _clip_seconds(data.clips["train"])
    info = {"data": str(data.root.resolve()), "run_dir": str(run_dir.resolve()),
            "clips": {part: len(clips) for part, clips in data.clips.items()},
            **({"init_from": str(job.init_from.resolve())} if job.init_from else {})}
    checkpoint_path = run_dir / CHECKPOINT_NAME

    def save_best(best_model, entries: dict) -> None:
        save_checkpoint(checkpoint_path, best_model, frames, data.class_names,
                        {**info, **entries}, clip_seconds=clip_seconds)

    try:
        result = fit(model, data, config, save_best, run_dir, job.progress, log, job.resume,
                     world, extend=job.extend)
    except KeyboardInterrupt:
        if (run_dir / STATE_NAME).exists():
            log(f"interrupted: the state after the last whole epoch is in {run_dir / STATE_NAME}"
                f"; continue with: lrcn train --resume {run_dir}")
        raise
    if world.main:
        update_info(checkpoint_path, **info, best_epoch=result.best_epoch,
                    **{f"best_{result.monitor}": result.best}, epochs_run=len(result.history),
                    val_accuracy=result.history[result.best_epoch - 1]["val_accuracy"])
    return TrainResult(run_dir, checkpoint_path, result.best_epoch, len(result.history),
                       result.history, data.skipped, data.parts, world.rank,
                       result.resumed_after)


def format_training(result: TrainResult, seconds: float) -> str:
    """The line `lrcn train` ends its training with."""
    done = result.epochs_run - result.resumed_after
    what = (f"trained {plural(done, 'epoch')} more ({result.epochs_run} in all)"
            if result.resumed_after else f"trained {plural(done, 'epoch')}")
    return (f"{what} in {seconds:.0f} s; best epoch {result.best_epoch}; checkpoint: "
            f"{result.checkpoint}")


def _clip_seconds(clips: Sequence[CachedClip]) -> float:
    """The typical time a training clip spans: what the model's 20 frames cover. Long-video
    inference uses it to sample windows at the time scale the model was trained on."""
    durations = [c.duration for c in clips if c.duration > 0]
    return round(statistics.median(durations), 3) if durations else 0.0


__all__ = ["train", "prepare_data", "fit", "TrainResult", "TrainingData", "TrainingJob",
           "report_skipped", "format_training"]
