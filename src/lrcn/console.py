"""What lrcn prints for a person: counts with the right plural, and progress that suits where it
goes. On a terminal a progress bar (tqdm) redraws itself in place; in a log file or a pipe
those redraws are carriage returns that pile up (19 KB of them in one short training log), so
there progress is a plain line now and then (every PROGRESS_EVERY seconds, and one at the end
of a bar that stays), each a whole line. `live_bars()` says where every open bar of either
kind is (the studio's training job reports it as its progress).
"""
from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import Any, Iterable, TextIO

PROGRESS_EVERY = 30.0     # seconds between plain progress lines (not on a terminal)

# The bars made by progress(), oldest first, weakly held (a bar dropped without close() goes
# with its object); another thread may read them (live_bars) while they are made.
_BARS: list[weakref.ref] = []
_BARS_LOCK = threading.Lock()


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


def _closed(bar) -> bool:
    # tqdm's close() sets `disable`; _Lines sets `closed`
    return bool(getattr(bar, "closed", False) or getattr(bar, "disable", False))


def _register(bar):
    with _BARS_LOCK:
        _BARS[:] = [ref for ref in _BARS if (b := ref()) is not None and not _closed(b)]
        _BARS.append(weakref.ref(bar))
    return bar


def live_bars() -> list[tuple[str, int, int | None]]:
    """(desc, n, total) of every progress bar open now in this process, oldest first: tqdm's
    and the plain-line ones alike."""
    with _BARS_LOCK:
        bars = [b for ref in _BARS if (b := ref()) is not None and not _closed(b)]
    return [(bar.desc, bar.n, bar.total) for bar in bars]


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, leave: bool = True,
             file: TextIO | None = None):
    """A progress bar over `iterable` (or `total` steps, with update()): tqdm on a terminal,
    plain lines otherwise, nothing when not `enabled`."""
    file = file or sys.stderr
    if enabled and not _on_terminal(file):
        return _register(_Lines(iterable, total, desc, unit, leave, file))
    from tqdm import tqdm
    bar = tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
               disable=not enabled, file=file, dynamic_ncols=True)
    return _register(bar) if enabled else bar


__all__ = ["plural", "progress", "live_bars", "PROGRESS_EVERY"]
