"""Errors a user can act on: the CLI prints them as one line and exits with code 2.

The library names what is wrong in its own (Python) terms. `ParameterError` carries the name of the
parameter at fault, so each front end speaks its caller's language without rewriting messages: the CLI
shows the flag of that parameter (`--nbits`), the HTTP service the JSON field (`nbits`).
"""

from __future__ import annotations

from pathlib import Path


class MbretError(Exception):
    """A problem with the user's input or setup (not a bug): shown as one line, exit code 2."""

    exit_code = 2


class MbretWarning(UserWarning):
    """Something the user should know that does not stop the run: the CLI prints it as `warning: ...`."""


class ParameterError(MbretError):
    """A bad value (or combination) of one parameter, named as the Python API names it (`nbits`).

    `str(error)` is `"nbits: 3: must be 1, 2, 4 or 8"`; `error.render("--nbits")` is how the CLI shows it,
    and the HTTP service reports `parameter` as the request field at fault.
    """

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.message = message
        super().__init__(f"{parameter}: {message}")

    def render(self, name: str) -> str:
        """The message with the parameter called `name` (a CLI flag, an HTTP field)."""
        return f"{name}: {self.message}"


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
