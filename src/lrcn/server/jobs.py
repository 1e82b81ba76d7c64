"""Timeline jobs for the server: each long video is worked on in a process of its own, so that a
stalled or crashing decoder, a cancel or a shutdown stops that job and nothing else.

A job's folder holds the upload, `progress.json` (written atomically as the job goes), and at
the end `timeline.json`, `timeline.png`, `video.mp4` (annotated H.264) or `error.json`. The
server (app.py) reads those files; job ids are random tokens, checked before any use, never
paths chosen by a client.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from ..files import atomic_write_text

JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")
# The files of a finished job that a client may download (the route's parameter takes only
# these names, so no name from a client reaches the file system), with their media types.
JobFile = Literal["timeline.json", "segments.csv", "windows.csv", "timeline.png", "video.mp4"]
MEDIA_TYPES = dict(zip(get_args(JobFile), ("application/json", "text/csv", "text/csv",
                                          "image/png", "video/mp4")))


def new_job_id() -> str:
    return secrets.token_urlsafe(16)          # 22 characters of [A-Za-z0-9_-]


def _expected_duration(path: Path) -> float:
    from ..media.video import open_video
    with open_video(path) as container:
        stream = container.streams.video[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return container.duration / 1e6 if container.duration else 0.0


def run_timeline_job(checkpoint: str, device: str, precision: str, video: str, folder: str,
                     window: dict) -> None:
    """The job process: the timeline of `video` and its files in `folder`."""
    from ..inference.engine import load_engine
    from ..errors import LrcnError
    from ..inference.timeline import annotate_timeline, timeline_for_video, write_timeline
    from ..inference.windows import WindowConfig
    out = Path(folder)
    last = [0.0]

    def report(fraction: float, phase: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or fraction >= 1:
            last[0] = now
            atomic_write_text(out / "progress.json", json.dumps(
                {"progress": round(min(1.0, fraction), 4), "phase": phase, "at": time.time()}))

    try:
        report(0.0, "loading the model")
        engine = load_engine(checkpoint, device=device, precision=precision)
        duration = _expected_duration(Path(video)) or 1.0
        timeline = timeline_for_video(engine, video, WindowConfig(**window),
                                      progress=lambda t: report(0.6 * t / duration, "scoring"))
        write_timeline(timeline, out)
        annotate_timeline(video, timeline, out / "video.mp4",
                          progress=lambda t: report(0.6 + 0.4 * t / duration, "annotating"))
        report(1.0, "done")
    except LrcnError as exc:
        # The cause alone: the path is the server's, not the client's.
        atomic_write_text(out / "error.json", json.dumps({"error": exc.reason}))
    except Exception as exc:   # reported to the client as a failed job, not a dead server
        atomic_write_text(out / "error.json", json.dumps(
            {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))


@dataclass
class Job:
    id: str
    folder: Path
    video: Path
    created: float = field(default_factory=time.time)
    state: str = "queued"            # queued, running, done, failed, cancelled
    error: str | None = None
    finished: float | None = None
    process: mp.process.BaseProcess | None = None

    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        try:
            return float(json.loads((self.folder / "progress.json").read_text())["progress"])
        except (OSError, ValueError, KeyError):
            return 0.0

    def last_progress_at(self) -> float:
        try:
            return (self.folder / "progress.json").stat().st_mtime
        except OSError:
            return self.created


class JobRunner:
    """Runs at most `jobs` timeline processes at once; more wait in order. A job whose process
    reports no progress for `stall_seconds` (the decoder timeout) is killed and failed. Jobs
    finished more than `keep_seconds` ago are removed with their files."""

    def __init__(self, checkpoint: str, device: str, precision: str, window: dict, root: Path,
                 jobs: int, stall_seconds: float, keep_seconds: float):
        self.checkpoint, self.device, self.precision = checkpoint, device, precision
        self.window = window
        self.root, self.slots = root, max(1, jobs)
        self.stall_seconds, self.keep_seconds = stall_seconds, keep_seconds
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ctx = mp.get_context("spawn")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lrcn-jobs")
        self._thread.start()

    def new_folder(self) -> tuple[str, Path]:
        job_id = new_job_id()
        folder = self.root / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def add(self, job_id: str, folder: Path, video: Path) -> Job:
        job = Job(job_id, folder, video)
        with self._lock:
            self.jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            return self.jobs.get(job_id)

    def waiting(self) -> int:
        with self._lock:
            return sum(j.state == "queued" for j in self.jobs.values())

    def remove(self, job_id: str) -> bool:
        """Cancel a job that is waiting or running, or remove a finished one."""
        with self._lock:
            job = self.jobs.pop(job_id, None)
        if job is None:
            return False
        self._kill(job)
        shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def _kill(self, job: Job) -> None:
        if job.process is not None and job.process.is_alive():
            job.process.kill()
            job.process.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        now = time.time()
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            if job.state == "running":
                if not job.process.is_alive():
                    job.process.join()
                    self._finish(job)
                elif now - job.last_progress_at() > self.stall_seconds:
                    self._kill(job)
                    job.state, job.error = "failed", \
                        f"timed out after {self.stall_seconds:g} s without progress (decoder " \
                        "stalled)"
                    job.finished = now
        running = sum(j.state == "running" for j in jobs)
        for job in sorted((j for j in jobs if j.state == "queued"), key=lambda j: j.created):
            if running >= self.slots:
                break
            job.process = self._ctx.Process(
                target=run_timeline_job, daemon=True,
                args=(self.checkpoint, self.device, self.precision, str(job.video),
                      str(job.folder), self.window))
            job.process.start()
            job.state, running = "running", running + 1
            # the wait for the model to load counts as progress, not as a stall
            atomic_write_text(job.folder / "progress.json",
                              json.dumps({"progress": 0.0, "phase": "starting"}))
        for job in jobs:
            if job.finished is not None and now - job.finished > self.keep_seconds:
                self.remove(job.id)

    def _finish(self, job: Job) -> None:
        job.finished = time.time()
        error = job.folder / "error.json"
        if error.exists():
            job.state, job.error = "failed", json.loads(error.read_text())["error"]
        elif (job.folder / "timeline.json").exists() and (job.folder / "video.mp4").exists():
            job.state = "done"
            job.video.unlink(missing_ok=True)      # the upload is no longer needed
        else:
            job.state = "failed"
            job.error = f"the job's process ended without a result (exit code " \
                        f"{job.process.exitcode})"

    def close(self, grace: float = 10.0) -> None:
        """Stop: running jobs get `grace` seconds to finish, then are killed."""
        self._stop.set()
        self._thread.join(timeout=5)
        deadline = time.monotonic() + grace
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            if job.process is not None:
                job.process.join(timeout=max(0.0, deadline - time.monotonic()))
                self._kill(job)


__all__ = ["Job", "JobFile", "JobRunner", "JOB_ID", "MEDIA_TYPES", "new_job_id",
           "run_timeline_job"]
