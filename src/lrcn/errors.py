"""The one error type the CLI turns into a one-line message (no traceback), with its kind:
callers decide by the kind (the CLI's exit code, the server's HTTP status), never by matching
the message's text."""
from __future__ import annotations

import enum
import numbers


class ErrorKind(enum.Enum):
    """What went wrong, as the person who gave the input would put it."""
    SETTING = "setting"        # a value, flag or combination of them that cannot be used
    NOT_FOUND = "not_found"    # a file, folder, run or job that is not there
    NOT_VIDEO = "not_video"    # a file that is not a video lrcn can read (no video stream...)
    BAD_INPUT = "bad_input"    # a file that was read but cannot be used: a damaged video, a
                               # checkpoint or data set that does not fit
    TIMEOUT = "timeout"        # the decoder stalled past its time limit
    FAILED = "failed"          # the work itself went wrong (training diverged, no data left)


class LrcnError(Exception):
    """A user-facing failure: bad input file, bad setting, unreadable checkpoint. The message
    names the file and the cause, in one line; `reason` is the cause alone and `path` the file
    (None when the error is not about one file)."""

    def __init__(self, message: str, path: object | None = None,
                 kind: ErrorKind = ErrorKind.BAD_INPUT):
        self.path = None if path is None else str(path)
        self.reason = message
        self.kind = kind
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self):   # across processes (decoder workers) with its path and kind
        return LrcnError, (self.reason, self.path, self.kind)


def whole_number(name: str, value: object, minimum: int = 1) -> int:
    """`value` as an int when it is a whole number >= `minimum` (NumPy's integers too; not a
    bool, not a float), else a SETTING error naming `name`: an API keyword checked where it
    is taken, not deep inside the work."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise LrcnError(f"{name} must be a whole number >= {minimum}, not {value!r}",
                        kind=ErrorKind.SETTING)
    return int(value)


def real_number(name: str, value: object) -> float:
    """`value` as a float when it is a real number (NumPy's too; not a bool or a string),
    else a SETTING error naming `name`. Ranges are the caller's to check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LrcnError(f"{name} must be a number, not {value!r}", kind=ErrorKind.SETTING)
    return float(value)


# The `lrcn` command's exit codes, one rule for every command (README, "Exit codes"):
EXIT_OK = 0
EXIT_SOME_FAILED = 1   # several inputs and some failed: the others' results were given
EXIT_BAD_INPUT = 2     # usage or input: a bad flag, a missing or unusable file; nothing done
EXIT_INTERNAL = 3      # an error in lrcn itself (a bug): printed with its traceback
# (130: interrupted with Ctrl-C, as shells report it.)


def batch_exit_code(failed: int, total: int) -> int:
    """A command over several inputs: 0 when all worked, EXIT_BAD_INPUT when none did (the
    same as one bad input alone), EXIT_SOME_FAILED when some did."""
    if not failed:
        return EXIT_OK
    return EXIT_BAD_INPUT if failed >= total else EXIT_SOME_FAILED


__all__ = ["ErrorKind", "LrcnError", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_BAD_INPUT",
           "EXIT_INTERNAL", "batch_exit_code", "whole_number", "real_number"]
