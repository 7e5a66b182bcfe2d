"""The `mbret` command: each command parses its flags, makes one library call and prints the result.

One module per command family (index, search, evaluate, rerank, serve, train), the options several share
in `options`, and `app`'s `run`, which turns errors into messages. Importing this package loads typer and
the light `mbret.types` / `mbret.errors` only, so `mbret --help` answers at once.
"""

from mbret.cli.app import app, main, run

__all__ = ["app", "main", "run"]
