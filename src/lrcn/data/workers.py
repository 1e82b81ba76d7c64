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

from ..errors import ErrorKind, LrcnError


@dataclass
class TaskResult:
    item: Any
    value: Any = None
    error: str | None = None
    timed_out: bool = False
    os_error: bool = False      # the task raised an OSError: the machine's (a full disk), not ours


# A process is given this long to start (spawn, imports) before its first task's time limit
# begins; it says "ready" when it has. Counting the start in the limit failed the first
# task of every new process where the limit is short, and with it the replacement of a
# process lost to a stall, and so on.
START_SECONDS = 120.0


def _worker_loop(fn: Callable[[Any], Any], conn) -> None:
    conn.send(("ready", None))
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
            conn.send(("error", (f"{type(exc).__name__}: {exc}", isinstance(exc, OSError))))


class _Worker:
    def __init__(self, ctx, fn):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_loop, args=(fn, child), daemon=True)
        self.process.start()
        child.close()
        self.item: Any = None
        self.busy = False
        self.ready = False           # the process has started and said so
        self.started = 0.0           # when its task was sent, or when it said ready after that

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


def _deadline(worker: _Worker, timeout: float | None) -> float | None:
    """When a busy worker's task runs out of time: its limit from when the process said it was
    ready; START_SECONDS (or the limit, if longer) until then."""
    if timeout is None:
        return None
    return worker.started + (timeout if worker.ready else max(timeout, START_SECONDS))


class _StartFailed(Exception):
    """A worker process died before it said it was ready."""

    def __init__(self, exitcode):
        super().__init__(exitcode)
        self.exitcode = exitcode


# Processes that die while starting are replaced and their task given to another, this many
# times in a row (none starting in between); then the pool stops with the likely cause. The
# usual one: a script without `if __name__ == "__main__":`, which every spawned process re-runs
# on import, so that it tries to start processes of its own and dies; each file was reported
# as a decoder crash.
START_FAILURES = 3


def start_failure(exitcode) -> LrcnError:
    return LrcnError(f"worker processes die while starting (exit code {exitcode}): a script "
                     "that runs lrcn must do so under `if __name__ == \"__main__\":` (each "
                     "worker process imports the script again), or use workers=0 (--workers "
                     "0)", kind=ErrorKind.SETTING)


def _finished(worker: _Worker, ready, timeout: float | None
              ) -> tuple[TaskResult, bool] | None:
    """A busy worker's task, if it has finished: (its result, whether the process is lost:
    dead or stalled, to be replaced); None while it is still running within its time."""
    if worker.conn in ready:
        try:
            status, value = worker.conn.recv()
        except (EOFError, OSError):
            status = None  # the pipe closed: the process died
        if status == "ready":            # started: the task's time begins now
            worker.ready, worker.started = True, time.monotonic()
            return None
        if status == "ok":
            return TaskResult(worker.item, value), False
        if status == "error":
            message, os_error = value
            return TaskResult(worker.item, error=message, os_error=os_error), False
    if worker.conn in ready or worker.process.sentinel in ready:
        worker.process.join(timeout=5)
        if not worker.ready:       # it died starting, before its task: not the file's doing
            raise _StartFailed(worker.process.exitcode)
        return TaskResult(worker.item, error=f"decoder process crashed (exit code "
                                             f"{worker.process.exitcode})"), True
    deadline = _deadline(worker, timeout)
    if deadline is not None and time.monotonic() >= deadline:
        limit = timeout if worker.ready else max(timeout, START_SECONDS)
        return TaskResult(worker.item, timed_out=True,
                          error=f"timed out after {limit:g} s (decoder stalled)"), True
    return None


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
                yield TaskResult(item, error=f"{type(exc).__name__}: {exc}",
                                 os_error=isinstance(exc, OSError))
        return
    ctx = mp.get_context("spawn")
    pending = list(reversed(items))
    pool = [_Worker(ctx, fn) for _ in range(min(workers, len(items)))]
    start_failures = 0
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
                wait_for = max(0.0, min(_deadline(w, timeout) - now for w in busy))
            ready = set(wait(waitables, timeout=wait_for))
            for index, worker in enumerate(pool):
                if not worker.busy:
                    continue
                try:
                    finished = _finished(worker, ready, timeout)
                except _StartFailed as failed:
                    start_failures += 1
                    if start_failures >= START_FAILURES:
                        raise start_failure(failed.exitcode) from None
                    worker.busy = False
                    pending.append(worker.item)      # its task, to another process
                    worker.stop(kill=True)
                    pool[index] = _Worker(ctx, fn)
                    continue
                if worker.ready:
                    start_failures = 0        # processes do start: a later death is not that
                if finished is None:
                    continue
                result, lost = finished
                worker.busy = False
                if lost:
                    worker.stop(kill=True)  # replace the dead or stalled process
                    pool[index] = _Worker(ctx, fn)
                yield result
    finally:
        for worker in pool:
            worker.stop(kill=worker.busy)


class WorkerPool:
    """A long-lived pool of the same kind, for a server: `submit(item)` returns a Future of
    `fn(item)` run in one of `workers` processes. A task whose process overruns `timeout`
    seconds fails with an LrcnError of kind TIMEOUT, one whose process dies (or whose `fn`
    raises) with kind FAILED, saying so; a lost process is replaced and the pool lives on.
    `close()` stops the processes."""

    def __init__(self, fn: Callable[[Any], Any], workers: int, timeout: float | None = None):
        import collections
        import threading
        self.fn, self.timeout = fn, timeout
        self._ctx = mp.get_context("spawn")
        self._pool = [_Worker(self._ctx, fn) for _ in range(max(1, workers))]
        self._pending: collections.deque = collections.deque()
        self._futures: dict[int, Any] = {}          # worker index -> its task's future
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = self._ctx.Pipe(duplex=False)
        self._closed = False
        self._thread = threading.Thread(target=self._manage, daemon=True, name="lrcn-workers")
        self._thread.start()

    def submit(self, item: Any):
        from concurrent.futures import Future
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._pending.append((item, future))
        self._wake_write.send(None)
        return future

    def _manage(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    break
                for index, worker in enumerate(self._pool):
                    while not worker.busy and self._pending:
                        item, future = self._pending.popleft()
                        if future.set_running_or_notify_cancel():
                            worker.submit(item)
                            self._futures[index] = future
                busy = [(i, w) for i, w in enumerate(self._pool) if w.busy]
            waitables = [self._wake_read] + [w.conn for _, w in busy] + \
                [w.process.sentinel for _, w in busy]
            wait_for = None
            if self.timeout is not None and busy:
                now = time.monotonic()
                wait_for = max(0.0, min(_deadline(w, self.timeout) - now for _, w in busy))
            ready = set(wait(waitables, timeout=wait_for))
            if self._wake_read in ready:
                while self._wake_read.poll():
                    self._wake_read.recv()
            for index, worker in busy:
                try:
                    finished = _finished(worker, ready, self.timeout)
                except _StartFailed as failed:   # the server's own command: fail the task
                    finished = (TaskResult(worker.item, error="worker process died while "
                                           f"starting (exit code {failed.exitcode})"), True)
                if finished is None:
                    continue
                result, lost = finished
                worker.busy = False
                future = self._futures.pop(index)
                if lost:
                    worker.stop(kill=True)
                    with self._lock:
                        self._pool[index] = _Worker(self._ctx, self.fn)
                if result.error is None:
                    future.set_result(result.value)
                else:   # a stall is a TIMEOUT; a crash or the task's own exception FAILED
                    future.set_exception(LrcnError(result.error, kind=ErrorKind.TIMEOUT
                                                   if result.timed_out else ErrorKind.FAILED))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
        self._wake_write.send(None)
        self._thread.join(timeout=10)
        for _, future in pending:
            future.cancel()
        for index, worker in enumerate(self._pool):
            worker.stop(kill=worker.busy)
            future = self._futures.pop(index, None)
            if future is not None and not future.done():
                future.set_exception(LrcnError("the server is stopping", kind=ErrorKind.FAILED))
