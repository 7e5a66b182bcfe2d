"""Old spellings of renamed parameters: each still works for a while, with a `DeprecationWarning` that names
its replacement (one name per concept: the Python parameter, the CLI flag, the HTTP field and the manifest
field are the same word)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def renamed(
    old_kwargs: dict[str, Any],
    old: str,
    new: str,
    value: Any,
    default: Any,
    convert: Callable[[Any], Any] | None = None,
    stacklevel: int = 3,
) -> Any:
    """The value for `new`: `value`, or (with a warning) the deprecated `old` popped from `old_kwargs`,
    through `convert` where the old name meant the opposite (`ignore_identical_ids` -> `keep_identical_ids`).
    Giving both is a TypeError, as two values for one parameter are."""
    if old not in old_kwargs:
        return value
    given = old_kwargs.pop(old)
    warnings.warn(f"{old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=stacklevel)
    if value != default:
        raise TypeError(f"got both {new}= and its deprecated name {old}=")
    return convert(given) if convert is not None else given


def no_other_kwargs(old_kwargs: dict[str, Any], function: str) -> None:
    """Refuse what is left of `**old_kwargs` after `renamed` took the old names it knows, as Python would."""
    if old_kwargs:
        raise TypeError(f"{function}() got an unexpected keyword argument {next(iter(old_kwargs))!r}")
