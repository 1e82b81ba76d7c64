"""The studio's training jobs: one at a time, each in a process of its own (as timeline jobs
are, jobs.py), so that the server's event loop never waits for training and a cancel kills
exactly the training. The process runs what `lrcn train` runs (training.runs) on the
workspace's data, with the workspace's cache; it writes progress.json into its run folder as
it goes and result.json or error.json at the end. A run that ends well is handed to
`on_trained` (the server serves it).

The split is training's own (data.check's rule decides what a class needs): with the default
fractions a class needs three sources (train, validation, test); the studio's data often has
two (two webcam sessions, two videos), so then it trains with no validation part (calibration
is skipped, early stopping watches the training loss; the job's log says so)."""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..console import live_bars
from ..errors import ErrorKind, LrcnError
from ..files import atomic_write_text
# At import, not in a request: importing PyTorch holds the GIL for seconds, and the server's
# event loop would stall behind it.
from ..data.check import groups_needed, small_classes
from ..data.dataset import load_samples
from ..models.registry import get_spec, settings_for
from .workspace import Workspace

DEFAULT_MODEL = "effnet-lstm"      # a pretrained backbone: what works on real footage


class Busy(Exception):
    """A training job is running already."""


def studio_split(data: Path, classes: list[str], model: str) -> tuple[dict, str | None]:
    """The split settings the studio trains `model` on `data` with, and a note when they are not
    the defaults: the defaults when every class has groups enough for them; with no validation
    part when a class has too few for one (two sources: one trains, one tests); refused, naming
    the class and what it needs, when a class has too few even for that. The rule is training's
    (data.check.small_classes on the clips' groups); training checks again on what decodes.
    Always with groups across classes: a webcam session or a long video holds several
    classes, and is held out whole (SplitConfig.across_classes)."""
    split = dataclasses.replace(settings_for(model).split, across_classes=True)
    names, samples, _ = load_samples(data, classes)
    if not small_classes(samples, names, split):
        return {"across_classes": True}, None
    no_val = dataclasses.replace(split, val_fraction=0.0)
    small = small_classes(samples, names, no_val)
    if small:
        name, why = next(iter(small.items()))
        raise LrcnError(f"class {name!r} is too small to train on: {why}; each class needs clips "
                        f"from {groups_needed(no_val)} sources (videos or webcam sessions), one "
                        "to train on and one to test on", kind=ErrorKind.SETTING)
    short = next(iter(small_classes(samples, names, split)))
    return {"val_fraction": 0.0, "across_classes": True}, (
        f"note: no validation part: class {short!r} has fewer than {groups_needed(split)} "
        "sources, so the split keeps one for testing and trains on the rest (calibration is "
        "skipped; clips from another video or session add a validation part)")


class _LogLines:
    """The training process's stderr (what the training code prints there: files skipped,
    truncated videos, warnings, progress lines) into the job's log as whole lines, and on to
    the server's stderr. Not a terminal, so progress is plain lines (console.progress)."""

    def __init__(self, log, stream):
        self.log, self.stream, self.pending = log, stream, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *whole, self.pending = (self.pending + text).split("\n")
        for line in whole:
            if line.strip():
                self.log(line.rstrip())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def run_training_job(data: str, run_dir: str, cache: str, classes: list, model: str,
                     epochs: int, workers: int, device: str, split: dict | None = None,
                     note: str | None = None) -> None:
    """The training process: `lrcn train DATA --model M --epochs E --out RUN` with the
    workspace's cache (and `split`: studio_split's settings, `note` its line for the log).
    progress.json (in the run folder) says the phase and how far it is; result.json or
    error.json ends it."""
    os.nice(5)                     # the server that started it answers first
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    stop = threading.Event()

    def log(*parts, **_) -> None:
        lines.append(" ".join(str(p) for p in parts))
        del lines[:-30]

    def report() -> None:
        """Where the work is: the newest open progress bar with a length (decoding,
        features, epoch i/E), as console.live_bars says."""
        while not stop.wait(0.3):
            bars = [bar for bar in live_bars() if bar[2]]
            phase, done, total = bars[-1] if bars else ("working", 0, 0)
            atomic_write_text(out / "progress.json", json.dumps({
                "phase": phase, "done": done, "total": total, "log": lines[-12:],
                "at": time.time()}))

    from ..training.job import make_job
    from ..training.runs import train_and_evaluate
    watcher = threading.Thread(target=report, daemon=True)
    watcher.start()
    sys.stderr = _LogLines(log, sys.stderr)
    if note:
        log(note)
    try:
        job = make_job(data, out, model=model, classes=classes, cache_dir=cache,
                       split=split or None, train={"epochs": epochs, "device": device},
                       workers=workers, progress=True)
        result = train_and_evaluate(job, log)
        atomic_write_text(out / "result.json", json.dumps(
            {"accuracy": result.report["accuracy"] if result.report else None}))
    except LrcnError as exc:
        atomic_write_text(out / "error.json", json.dumps({"error": exc.reason}))
    except Exception as exc:   # reported as a failed job, not a dead server
        atomic_write_text(out / "error.json", json.dumps({"error": _one_line(exc)}))
    finally:
        stop.set()
        watcher.join()


def _one_line(exc: Exception) -> str:
    """An unexpected exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@dataclass
class TrainJob:
    run: Path
    settings: dict
    process: mp.process.BaseProcess
    started: float = field(default_factory=time.time)
    state: str = "running"            # running, done, failed, cancelled
    error: str | None = None
    finished: float | None = None


class Trainer:
    """One training job at a time; when it ends well, its run is served."""

    def __init__(self, workspace: Workspace, on_trained, workers: int, device: str):
        self.workspace, self.on_trained = workspace, on_trained
        self.workers, self.device = workers, device
        self.job: TrainJob | None = None
        self._lock = threading.Lock()
        self._ctx = mp.get_context("spawn")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lrcn-train")
        self._thread.start()

    def start(self, model: str, epochs: int) -> TrainJob:
        get_spec(model)                          # an unknown model: refused before any work
        if not 1 <= epochs <= 500:
            raise LrcnError("epochs must be 1 to 500", kind=ErrorKind.SETTING)
        summary = self.workspace.summary()["classes"]
        classes = sorted(summary)
        if len(classes) < 2:
            raise LrcnError("at least two classes with clips are needed to train",
                            kind=ErrorKind.SETTING)
        split, note = studio_split(self.workspace.data, classes, model)
        with self._lock:
            if self.job is not None and self.job.state == "running":
                raise Busy("a training job is running: wait for it or cancel it")
            run = self.workspace.new_run_folder()
            run.mkdir(parents=True)
            settings = {"model": model, "epochs": epochs, "classes": classes,
                        "validation": split.get("val_fraction") != 0.0}
            process = self._ctx.Process(
                # not a daemon: training decodes in worker processes of its own
                target=run_training_job, daemon=False,
                args=(str(self.workspace.data), str(run), str(self.workspace.cache), classes,
                      model, epochs, self.workers, self.device, split, note))
            process.start()
            self.job = TrainJob(run, settings, process)
            return self.job

    def cancel(self) -> bool:
        with self._lock:
            job = self.job
            if job is None or job.state != "running":
                return False
            job.process.kill()
            job.process.join(timeout=10)
            job.state, job.finished = "cancelled", time.time()
        shutil.rmtree(job.run, ignore_errors=True)     # half a run is no run
        return True

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            try:
                self.poll()
            except Exception as exc:      # a bug costs the job, never the trainer's thread
                job = self.job
                if job is not None and job.state in ("running", "done"):
                    job.state, job.error = "failed", _one_line(exc)

    def poll(self) -> None:
        with self._lock:
            job = self.job
            if job is None or job.state != "running" or job.process.is_alive():
                return
            job.process.join()
            job.finished = time.time()
            error = job.run / "error.json"
            if error.exists():
                job.state, job.error = "failed", json.loads(error.read_text())["error"]
            elif (job.run / "result.json").exists():
                job.state = "done"
            else:
                job.state, job.error = "failed", \
                    f"the training process ended without a result (exit code " \
                    f"{job.process.exitcode})"
        if job.state == "done":
            try:
                self.on_trained(job.run)
            except LrcnError as exc:
                job.state, job.error = "failed", f"trained, but cannot be served: {exc.reason}"
            except Exception as exc:      # a bug in loading it: the job fails, the loop lives
                job.state, job.error = "failed", \
                    f"trained, but cannot be served: {_one_line(exc)}"

    def view(self) -> dict | None:
        job = self.job
        if job is None:
            return None
        view = {"run": job.run.name, "state": job.state, **job.settings,
                "started": job.started, "error": job.error}
        try:
            view.update(json.loads((job.run / "progress.json").read_text()))
        except (OSError, ValueError):
            view.update({"phase": "starting", "done": 0, "total": 0, "log": []})
        view["history"] = history(job.run)
        return view

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)       # it may be loading the new model: let it finish
        with self._lock:
            if self.job is not None and self.job.process.is_alive():
                self.job.process.kill()
                self.job.process.join(timeout=10)


def history(run: Path) -> list[dict]:
    """The run's epochs so far; a figure that is not a number (validation figures when there
    are no validation clips) is None, which JSON can carry."""
    from ..training.history import read_history
    try:
        rows = read_history(run / "history.csv")
    except (OSError, ValueError, IndexError):
        return []
    return [{k: v if math.isfinite(v) else None for k, v in row.items()} for row in rows]




__all__ = ["Busy", "DEFAULT_MODEL", "Trainer", "history", "run_training_job", "studio_split"]
