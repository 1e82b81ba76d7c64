"""The studio's training jobs: one at a time, each in a process of its own (as timeline jobs
are, jobs.py), so that the server's event loop never waits for training and a cancel kills
exactly the training. The process runs what `lrcn train` runs (training.runs) on the
workspace's data, with the workspace's cache; it writes progress.json into its run folder as
it goes and result.json or error.json at the end. A run that ends well is handed to
`on_trained` (the server serves it)."""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ErrorKind, LrcnError
from ..files import atomic_write_text
# At import, not in a request: importing PyTorch holds the GIL for seconds, and the server's
# event loop would stall behind it.
from ..models.registry import get_spec
from .workspace import Workspace

DEFAULT_MODEL = "effnet-lstm"      # a pretrained backbone: what works on real footage


class Busy(Exception):
    """A training job is running already."""


def run_training_job(data: str, run_dir: str, cache: str, classes: list, model: str,
                     epochs: int, workers: int, device: str) -> None:
    """The training process: `lrcn train DATA --model M --epochs E --out RUN` with the
    workspace's cache. progress.json (in the run folder) says the phase and how far it is;
    result.json or error.json ends it."""
    os.nice(5)                     # the server that started it answers first
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    stop = threading.Event()

    def log(*parts, **_) -> None:
        lines.append(" ".join(str(p) for p in parts))
        del lines[:-30]

    def report() -> None:
        """Where the work is: the progress bars the training code keeps (decoding, features,
        epoch i/E; tqdm registers every live bar on its class)."""
        from tqdm import tqdm
        while not stop.wait(0.3):
            bars = [b for b in list(getattr(tqdm, "_instances", ())) if b.total]
            bar = bars[-1] if bars else None
            atomic_write_text(out / "progress.json", json.dumps({
                "phase": bar.desc if bar else "working", "done": bar.n if bar else 0,
                "total": bar.total if bar else 0, "log": lines[-12:], "at": time.time()}))

    from ..training.job import make_job
    from ..training.runs import train_and_evaluate
    watcher = threading.Thread(target=report, daemon=True)
    watcher.start()
    try:
        job = make_job(data, out, model=model, classes=classes, cache_dir=cache,
                       train={"epochs": epochs, "device": device}, workers=workers,
                       progress=True)
        result = train_and_evaluate(job, log)
        atomic_write_text(out / "result.json", json.dumps(
            {"accuracy": result.report["accuracy"] if result.report else None}))
    except LrcnError as exc:
        atomic_write_text(out / "error.json", json.dumps({"error": exc.reason}))
    except Exception as exc:   # reported as a failed job, not a dead server
        atomic_write_text(out / "error.json", json.dumps(
            {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))
    finally:
        stop.set()
        watcher.join()


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
        thin = [c for c in classes if len(summary[c]["groups"]) < 2]
        if thin:
            raise LrcnError(f"class {thin[0]!r} has clips from one source only: two videos or "
                            "sessions per class are needed (one to train on, one to test on)",
                            kind=ErrorKind.SETTING)
        with self._lock:
            if self.job is not None and self.job.state == "running":
                raise Busy("a training job is running: wait for it or cancel it")
            run = self.workspace.new_run_folder()
            run.mkdir(parents=True)
            settings = {"model": model, "epochs": epochs, "classes": classes}
            process = self._ctx.Process(
                # not a daemon: training decodes in worker processes of its own
                target=run_training_job, daemon=False,
                args=(str(self.workspace.data), str(run), str(self.workspace.cache), classes,
                      model, epochs, self.workers, self.device))
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
            self.poll()

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




__all__ = ["Busy", "DEFAULT_MODEL", "Trainer", "history", "run_training_job"]
