"""The one error type the CLI turns into a one-line message (no traceback), with its kind:
callers decide by the kind (the CLI's exit code, the server's HTTP status), never by matching
the message's text."""
from __future__ import annotations

import enum


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


__all__ = ["ErrorKind", "LrcnError"]
