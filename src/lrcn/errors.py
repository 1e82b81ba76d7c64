"""The one error type the CLI turns into a one-line message (no traceback)."""


class LrcnError(Exception):
    """A user-facing failure: bad input file, bad setting, unreadable checkpoint. The message
    names the file and the cause, in one line."""

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
