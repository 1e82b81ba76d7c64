"""Atomic file writes: a reader (or a rerun after Ctrl-C) never sees half a file.

Every file lrcn writes goes through `atomic_path`: the content is written to a hidden
temporary sibling (same folder, so the final rename stays on one file system and is atomic),
which replaces the target only when the write succeeded; a failed write removes the temporary
and leaves the old file as it was. A kill (SIGKILL, power loss) can leave a temporary behind,
never a half target; temporaries start with "." so that data set listings skip them.

A file gets the usual permissions (0644 under umask 022; an existing file keeps its own):
some writers create their temporaries private (safetensors writes 0600), which would leave a
model nobody else on the machine can read.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
from pathlib import Path
from typing import Iterator

from .errors import ErrorKind, LrcnError

_counter = itertools.count()
_counter_lock = threading.Lock()


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A name beside `path` that no other writer uses (this process's id and a counter, so
    threads and processes writing the same target do not share one). It keeps the target's
    suffix, because some writers choose the format by it (np.save adds ".npy" to any other
    name, matplotlib and PyAV pick PNG or MP4 by it)."""
    path = Path(path)
    with _counter_lock:
        n = next(_counter)
    return path.with_name(f".{path.stem}.{os.getpid()}-{n}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to (for libraries that write files
    themselves: np.save, safetensors, onnx.save, savefig, PyAV); on leaving the block without
    an exception the temporary replaces `path`, on an exception it is removed and `path` is
    untouched. The folder must exist. A folder at `path` is refused before the work: the
    rename would fail at the end, naming the temporary."""
    path = Path(path)
    if path.is_dir():
        raise LrcnError("is a folder: give a file's name", path, ErrorKind.SETTING)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _usual_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:   # Ctrl-C too: never a temporary left by an orderly exit
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can only
    be read by setting it, which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _counter_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _usual_mode(tmp: Path, target: Path) -> None:
    """Give the new file the target's mode, or a new file's (0666 less the umask), whatever
    mode its writer created the temporary with."""
    if not tmp.is_file():
        return          # a writer that wrote nothing: os.replace says so
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)


def output_folder(path: str | os.PathLike, what: str = "these files are",
                  make: bool = True) -> Path:
    """`path` made a folder (with its parents) for output, or a one-line SETTING error when a
    file is there (the OS's "File exists" named neither the cause nor the fix). `make=False`
    only checks, before work that may fail and should then leave no empty folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LrcnError(f"is a file: {what} written into a folder", path, ErrorKind.SETTING)
    if make:
        path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["output_folder", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "temporary_sibling"]
