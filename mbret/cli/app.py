"""The typer app and `run`, which turns what goes wrong into what the user can act on: click's usage
message (exit 2) for a bad command line, one `error: --flag: message` line (exit 2) for a bad value the
library refuses, and a one-line warning for a deprecated flag spelling.

Importing this module (and `mbret --help`) loads typer and nothing heavy: commands import the library in
their bodies.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import typer

from mbret.errors import MbretError, MbretWarning, ParameterError

app = typer.Typer(
    help="mbret: dense and ColBERT retrieval on ModernBERT (or any HF encoder), with indexes and BEIR evaluation.\n\n"
    'Quick start:  mbret index corpus.jsonl --model minilm --output idx;  mbret search idx "a query";  '
    "mbret eval path/to/beir/scifact --model minilm --output results/",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: rendering it with rich costs more than --help may take
)

# Old flag spellings: still accepted (not shown in --help), rewritten to the new flag with a warning.
# "*" applies to every command that has the new flag; a command's own entries to it alone.
DEPRECATED_FLAGS: dict[str, dict[str, str]] = {
    "*": {"--out": "--output", "--max-length": "--document-length"},
    "rerank": {"--depth": "--rerank-depth"},
}


def rewrite_deprecated_flags(command_name: str, flags: set[str], args: list[str]) -> list[str]:
    """`args` of command `command_name` (whose option strings are `flags`) with every deprecated spelling
    (`--out x` and `--out=x` alike) replaced by its new flag, each announced once on stderr."""
    aliases = {**DEPRECATED_FLAGS["*"], **DEPRECATED_FLAGS.get(command_name, {})}
    aliases = {old: new for old, new in aliases.items() if new in flags and old not in flags}
    rewritten: list[str] = []
    warned: set[str] = set()
    for position, arg in enumerate(args):
        if arg == "--":  # what follows is positional, whatever it looks like
            return rewritten + args[position:]
        name, equals, value = arg.partition("=")
        if name in aliases:
            if name not in warned:
                typer.echo(f"warning: {name} is deprecated; use {aliases[name]}", err=True)
                warned.add(name)
            arg = aliases[name] + equals + value
        rewritten.append(arg)
    return rewritten


def flag_name(command: Any, parameter: str) -> str:
    """How the user spells the Python parameter `parameter` of a click command: its longest option string,
    an argument's metavar; the Python name itself when the command has no such parameter."""
    for param in getattr(command, "params", []):
        if param.name == parameter:
            if param.param_type_name == "option":
                return max(param.opts, key=len)
            return getattr(param, "metavar", None) or param.name.upper()
    return parameter


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """Exception class `name` of every click in use: typer's own copy (typer >= 0.29 ships one, with Exit
    and Abort in typer itself) and plain click, when loaded (a click that is not loaded raised nothing)."""
    found = {getattr(typer, name, None)}
    for module in ("typer._click", "click"):
        if module in sys.modules:
            found.add(getattr(sys.modules[module].exceptions, name, None))
    return tuple(c for c in found if isinstance(c, type))


def _click_error(exc: BaseException) -> int | None:
    """The exit code of a click exception (after showing it as click does), None for anything else."""
    if isinstance(exc, _click_classes("ClickException")):  # UsageError (exit 2) and the rest show themselves
        exc.show()  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    if isinstance(exc, _click_classes("Exit")):
        return int(exc.exit_code)  # type: ignore[attr-defined]
    if isinstance(exc, _click_classes("Abort")):
        typer.echo("aborted", err=True)
        return 1
    return None


def _quiet_libraries() -> None:
    """Before a command runs (not for --help: transformers is slow to import)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _quieted(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def invoke(*args: Any, **kwargs: Any) -> Any:
        _quiet_libraries()
        return callback(*args, **kwargs)

    return invoke


def _help_text(group: Any, invoked: Any, args: list[str]) -> str | None:
    """The help `args` ask for (none, `--help`, or `COMMAND ... --help`), formatted without parsing: typer's
    parsing loads pydantic to convert values, which would double what `--help` takes."""
    wanted = args[: args.index("--")] if "--" in args else args
    if not args or wanted == ["--help"]:
        return group.get_help(group.context_class(group, info_name="mbret"))
    if invoked is None or "--help" not in wanted[1:]:
        return None
    parent = group.context_class(group, info_name="mbret")
    return invoked.get_help(invoked.context_class(invoked, info_name=args[0], parent=parent))


def _show_warning(shown):  # noqa: ANN001, ANN202 - wraps warnings.showwarning, whatever its signature
    """mbret's own warnings as one `warning: ...` line on stderr (as errors are); others as Python shows them."""

    def show(message, category, *rest, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if issubclass(category, MbretWarning):
            typer.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, *rest, **kwargs)

    return show


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: the process's arguments) and return its exit code: usage errors are
    click's message and code 2, the library's errors one line on stderr and their code (2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    group = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(group, "commands", {})
    for command in commands.values():
        command.callback = _quieted(command.callback)
    invoked = next((commands[arg] for arg in args[:1] if arg in commands), None)
    shown = _help_text(group, invoked, args)
    if shown is not None:
        typer.echo(shown)
        return 0
    if invoked is not None:
        flags = {flag for p in invoked.params for flag in (*p.opts, *p.secondary_opts)}
        args = args[:1] + rewrite_deprecated_flags(args[0], flags, args[1:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", MbretWarning)
            warnings.showwarning = _show_warning(warnings.showwarning)
            returned = group.main(args=args, prog_name="mbret", standalone_mode=False)
    except MbretError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, every rank fails with the same error
            message = exc.render(flag_name(invoked, exc.parameter)) if isinstance(exc, ParameterError) else str(exc)
            typer.echo(f"error: {message}", err=True)
        return exc.exit_code
    except Exception as exc:
        code = _click_error(exc)
        if code is None:
            raise
        return code
    return returned if isinstance(returned, int) else 0


def main() -> None:
    """Console entry point (`mbret`, `python -m mbret`)."""
    sys.exit(run())


# Registering the commands: each module adds its own to `app` (imported last: they import `app` from here).
from mbret.cli import index, search, serve, rerank, evaluate, train  # noqa: E402, F401, I001 - in --help order
