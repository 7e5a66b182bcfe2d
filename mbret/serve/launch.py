"""Starting the HTTP service from index directories and limits: checked here, before anything listens. What
`mbret serve` does (`plan_serve`, then `ServePlan.run`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import MbretError, ParameterError
from mbret.serve.config import ServeConfig


@dataclass(frozen=True)
class ServePlan:
    """A checked configuration: the indexes by served name, and how uvicorn runs them."""

    names: dict[str, Path]
    config: ServeConfig
    host: str
    port: int
    workers: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Serve until stopped (one process, or `workers` each loading every index)."""
        import uvicorn

        options = {"host": self.host, "port": self.port, **self.options}
        if self.workers == 1:
            from mbret.serve.app import create_app

            uvicorn.run(create_app(self.config), **options)
        else:
            os.environ["MBRET_SERVE_CONFIG"] = self.config.to_json()
            uvicorn.run("mbret.serve.app:app_from_environment", factory=True, workers=self.workers, **options)


def plan_serve(
    index_dirs: list[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    device: str | None = None,
    api_key_file: Path | None = None,
    read_only: bool = False,
    max_k: int = 1000,
    max_body_mb: float = 16.0,
    max_pending_writes: int = 64,
    batch_window_ms: float = 2.0,
    access_log: bool = False,
) -> ServePlan:
    """Check the indexes (each served under its directory name) and limits, and the serve extra."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MbretError("serving needs the serve extra: pip install 'mbret[serve]'") from None
    from mbret.indexes.base import read_manifest
    from mbret.serve.config import read_api_key

    names: dict[str, Path] = {}
    for path in index_dirs:
        read_manifest(path)  # a missing or broken index fails here, before anything starts
        name = path.absolute().name
        if name in names:
            raise ParameterError("index_dirs", f"{path}: {names[name]} is already served as {name!r}; rename one")
        names[name] = path
    for name, value in (("workers", workers), ("max_k", max_k), ("max_pending_writes", max_pending_writes)):
        if value < 1:
            raise ParameterError(name, f"{value}: must be at least 1")
    if batch_window_ms < 0:
        raise ParameterError("batch_window_ms", f"{batch_window_ms}: must be 0 or more")
    if max_body_mb <= 0:
        raise ParameterError("max_body_mb", f"{max_body_mb}: must be more than 0")
    if api_key_file is not None:
        read_api_key(api_key_file)
    config = ServeConfig(
        indexes=tuple(str(p) for p in index_dirs), device=device,
        api_key_file=str(api_key_file) if api_key_file else None, read_only=read_only, max_k=max_k,
        max_body_bytes=int(max_body_mb * 1024 * 1024), max_pending_writes=max_pending_writes,
        batch_window_ms=batch_window_ms,
    )  # fmt: skip
    options = {"access_log": access_log, "timeout_graceful_shutdown": 60}
    return ServePlan(names, config, host, port, workers, options)
