"""Errors a user can act on: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class MbretError(Exception):
    """A problem with the user's input or setup (not a bug): shown as one line, exit code 2."""

    exit_code = 2


class MbretWarning(UserWarning):
    """Something the user should know that does not stop the run: the CLI prints it as `warning: ...`."""


class InputError(MbretError):
    """Malformed input data, located by file and (1-based) line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class IndexFormatError(MbretError):
    """An index directory that is missing, truncated, or built for another model."""


class StaleIndexError(MbretError):
    """A save on top of an index generation that another writer has replaced since this one was loaded."""
