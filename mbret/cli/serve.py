"""`mbret serve`: indexes over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mbret.cli.app import app
from mbret.cli.options import DeviceOpt


@app.command()
def serve(
    index_dirs: Annotated[
        list[Path], typer.Argument(metavar="DIR...", help="Index directories, each served under its directory name.")
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option("--workers", help="Worker processes, each loading every index and model once; writes stay safe."),
    ] = 1,
    device: DeviceOpt = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file", help="Require this file's key (Authorization: Bearer KEY) on /indexes and /metrics."
        ),
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Refuse writes (403); search only.")] = False,
    max_k: Annotated[int, typer.Option("--max-k", help="Largest k a search may ask for.")] = 1000,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body, in MiB.")] = 16.0,
    max_pending_writes: Annotated[
        int, typer.Option("--max-pending-writes", help="Writes queued per index before 503 + Retry-After.")
    ] = 64,
    batch_window_ms: Annotated[
        float,
        typer.Option("--batch-window-ms", help="How long query encoding waits to batch concurrent requests (0: none)."),
    ] = 2.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request (uvicorn's access log).")] = False,
) -> None:
    """Serve indexes over HTTP: search (with filters and documents), add and delete documents (answered
    once committed to disk), info, /health, /metrics (Prometheus), OpenAPI docs at /docs and a search
    page at /. Needs the package's serve extra (fastapi, uvicorn).

    Example: mbret serve runs/scifact-mini --port 8000, then
    curl -s localhost:8000/indexes/scifact-mini/search -d '{"queries": ["vitamin D"], "k": 3}'
    """
    given = dict(locals())  # every flag, by the name plan_serve takes it: the list is written once, above
    from mbret.serve.launch import plan_serve

    plan = plan_serve(**given)
    typer.echo(f"serving {', '.join(plan.names)} at {plan.address} (docs: /docs, search page: /)", err=True)
    plan.run()
