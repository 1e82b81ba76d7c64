"""What lrcn prints for a person: counts with the right plural, and progress that suits where it
goes. On a terminal a progress bar (tqdm) redraws itself in place; in a log file or a pipe
those redraws are carriage returns that pile up (19 KB of them in one short training log), so
there progress is a plain line now and then (every PROGRESS_EVERY seconds, and one at the end
of a bar that stays), each a whole line.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, TextIO

PROGRESS_EVERY = 30.0     # seconds between plain progress lines (not on a terminal)


def plural(count: int, word: str, many: str | None = None) -> str:
    """"1 epoch", "2 epochs", "0 groups", "3 classes", "2 batches"; `many` for a word whose
    plural is not made by adding -s or -es."""
    return f"{count} {word if count == 1 else many or _many(word)}"


def _many(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "sh", "tch")) else "s")   # epochs, batches


def _on_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # a closed or stand-in stream
        return False


class _Lines:
    """tqdm's interface as lrcn uses it (iterate, update, set_postfix, close, `with`), written
    as plain lines: "decoding: 40/120 clips (33%), 31 s"."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str,
                 leave: bool, file: TextIO):
        self.iterable, self.desc, self.unit, self.leave, self.file = \
            iterable, desc, unit, leave, file
        self.total = total if total is not None else _length(iterable)
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "_Lines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave and self.n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        words = self.unit if self.total == 1 else _many(self.unit)
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {words}{share}, {now - self.start:.0f} s{extra}",
              file=self.file, flush=True)


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)        # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, leave: bool = True,
             file: TextIO | None = None):
    """A progress bar over `iterable` (or `total` steps, with update()): tqdm on a terminal,
    plain lines otherwise, nothing when not `enabled`."""
    file = file or sys.stderr
    if enabled and not _on_terminal(file):
        return _Lines(iterable, total, desc, unit, leave, file)
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
                disable=not enabled, file=file, dynamic_ncols=True)


__all__ = ["plural", "progress", "PROGRESS_EVERY"]
