"""A small process pool that survives its workers: a task whose process dies (a decoder crash)
or overruns its time limit (a decoder stall) is reported as failed, the process is replaced,
and the remaining tasks carry on. `concurrent.futures` breaks the whole pool on one death and
cannot stop a stalled task, which is why this exists."""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator


@dataclass
class TaskResult:
    item: Any
    value: Any = None
    error: str | None = None
    timed_out: bool = False


def _worker_loop(fn: Callable[[Any], Any], conn) -> None:
    while True:
        try:
            item = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if item is None:
            return
        try:
            conn.send(("ok", fn(item)))
        except KeyboardInterrupt:
            return
        except Exception as exc:  # reported per task; the worker lives on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, ctx, fn):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_loop, args=(fn, child), daemon=True)
        self.process.start()
        child.close()
        self.item: Any = None
        self.busy = False
        self.started = 0.0

    def submit(self, item: Any) -> None:
        self.item, self.busy, self.started = item, True, time.monotonic()
        self.conn.send(item)

    def stop(self, kill: bool = False) -> None:
        if kill or self.busy:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def run_tasks(fn: Callable[[Any], Any], items: Iterable[Any], workers: int,
              timeout: float | None = None) -> Iterator[TaskResult]:
    """Run `fn(item)` for every item in `workers` processes; yield results as they finish.

    `fn` must be a module-level function (processes are spawned, not forked: forking a parent
    that has started PyTorch's thread pools can deadlock). With workers=0 everything runs in
    this process, without crash or stall protection.
    """
    items = list(items)
    if workers <= 0:
        for item in items:
            try:
                yield TaskResult(item, fn(item))
            except Exception as exc:
                yield TaskResult(item, error=f"{type(exc).__name__}: {exc}")
        return
    ctx = mp.get_context("spawn")
    pending = list(reversed(items))
    pool = [_Worker(ctx, fn) for _ in range(min(workers, len(items)))]
    try:
        while pending or any(w.busy for w in pool):
            for worker in pool:
                if not worker.busy and pending:
                    worker.submit(pending.pop())
            busy = [w for w in pool if w.busy]
            waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            wait_for = None
            if timeout is not None:
                now = time.monotonic()
                wait_for = max(0.0, min(w.started + timeout - now for w in busy))
            ready = set(wait(waitables, timeout=wait_for))
            for index, worker in enumerate(pool):
                if not worker.busy:
                    continue
                result: TaskResult | None = None
                status, lost = None, False  # lost: the process is dead or stalled
                if worker.conn in ready:
                    try:
                        status, value = worker.conn.recv()
                    except (EOFError, OSError):
                        status = None  # the pipe closed: the process died
                if status == "ok":
                    result = TaskResult(worker.item, value)
                elif status == "error":
                    result = TaskResult(worker.item, error=value)
                elif worker.conn in ready or worker.process.sentinel in ready:
                    worker.process.join(timeout=5)
                    code, lost = worker.process.exitcode, True
                    result = TaskResult(worker.item,
                                        error=f"decoder process crashed (exit code {code})")
                elif timeout is not None and time.monotonic() - worker.started >= timeout:
                    result = TaskResult(worker.item, timed_out=True,
                                        error=f"timed out after {timeout:g} s (decoder stalled)")
                    lost = True
                if result is None:
                    continue
                worker.busy = False
                if lost:
                    worker.stop(kill=True)  # replace the dead or stalled process
                    pool[index] = _Worker(ctx, fn)
                yield result
    finally:
        for worker in pool:
            worker.stop(kill=worker.busy)
