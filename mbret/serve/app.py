"""The HTTP service (FastAPI): search, documents, info, health, metrics and a search page over the served
indexes (`service.ServedIndex`). Every error is one JSON shape, `{"error": {"code", "message"}}`.

Endpoint functions are plain `def`s: FastAPI runs them on its thread pool, so searches run off the event
loop, many at once, and a write's caller waits for its commit on a thread, not on the loop.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mbret.errors import MbretError, ParameterError
from mbret.indexes.info import index_info
from mbret.serve.config import ServeConfig, read_api_key
from mbret.serve.service import ServedIndex, ServeError, load_indexes
from mbret.types import SearchParams

Scalar = str | int | float | bool | None
FILTER_FIELDS = ("where", "params")  # a refused filter answers with the code bad_filter
OPEN_PATHS = {"/", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"}


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[str] = Field(description="One or more queries (not empty, not blank).")
    k: int = Field(10, description="Hits per query.")
    where: str | None = Field(None, description='A metadata condition, e.g. "year >= ? AND venue = ?".')
    params: list[Scalar] = Field(default_factory=list, description="A value for each ? of where.")
    ids: list[str] | None = Field(None, description="Search only these documents.")
    return_documents: bool = Field(True, description="Fill each hit's title, text and metadata.")
    n_ivf_probe: int | None = Field(None, ge=1, description="PLAID: centroids probed per query token.")
    centroid_score_threshold: float | None = Field(None, description="PLAID: prune centroids below this.")
    n_candidates: int | None = Field(None, ge=1, description="PLAID: documents kept after centroid scoring.")
    n_full_scores: int | None = Field(None, ge=1, description="PLAID: documents scored on their vectors.")
    nprobe: int | None = Field(None, ge=1, description="FAISS ivfpq: inverted lists visited.")
    ef_search: int | None = Field(None, ge=1, description="FAISS hnsw: the graph walk's width.")

    def search_params(self) -> SearchParams | None:
        """The request's search settings (its fields named as `SearchParams`'), None when it sets none."""
        given = {name: getattr(self, name) for name in SearchParams.names() if getattr(self, name) is not None}
        if not given:
            return None
        try:
            return SearchParams(**given)
        except ParameterError as exc:  # the fields carry SearchParams' names: the parameter is the field
            raise ServeError(422, "invalid_field", exc.render(exc.parameter)) from None


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(alias="_id", min_length=1, description="The document's id (unique in the index).")
    title: str = ""
    text: str = ""
    metadata: dict[str, Scalar] = Field(default_factory=dict, description="Flat: strings, numbers, booleans, null.")


class AddRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn]


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str]


class _BodyLimit:
    """Answers 413 for a body over `limit` bytes: at once when its Content-Length says so, else as it
    streams in (a chunked body), reading it before the app does. (An exception raised from `receive`
    instead reaches FastAPI wrapped by the middleware's task group, and comes out as a 400.)"""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def _refuse(self, send: Any) -> None:
        message = f"the body is over {self.limit} bytes"
        body = json.dumps({"error": {"code": "body_too_large", "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"x-mbret-error", b"body_too_large")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, field: str | None = None
) -> JSONResponse:
    headers = {**(headers or {}), "X-Mbret-Error": code}
    error = {"code": code, "message": message, **({"field": field} if field is not None else {})}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mbret_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter("mbret_errors", "Error responses by code.", ["status", "code"], registry=self.registry)
        self.latency = Histogram(
            "mbret_request_seconds",
            "Request latency by route.",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_depth = Gauge(
            "mbret_write_queue_depth", "Writes queued per index.", ["index"], registry=self.registry
        )
        self.documents = Gauge("mbret_documents", "Live documents per index.", ["index"], registry=self.registry)
        self.generation = Gauge("mbret_generation", "Generation served per index.", ["index"], registry=self.registry)
        self.batches = Gauge("mbret_query_batches", "Query encodings run per index.", ["index"], registry=self.registry)


def create_app(config: ServeConfig) -> FastAPI:
    """The service over `config.indexes`, loaded at startup (so `/health` answers only once all are)."""
    metrics = _Metrics()
    served: dict[str, ServedIndex] = {}
    api_key = read_api_key(config.api_key_file) if config.api_key_file else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        served.update(load_indexes(config, progress=print))
        app.state.ready = True
        yield
        app.state.ready = False
        for index in served.values():  # commit what is queued, refuse the rest
            index.close()

    app = FastAPI(
        title="mbret",
        summary="Dense and ColBERT search over mbret indexes, with documents, filters and durable writes.",
        lifespan=lifespan,
    )
    app.state.ready = False
    app.state.served = served

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers, exc.field)

    @app.exception_handler(ParameterError)
    async def _parameter_error(request: Request, exc: ParameterError) -> JSONResponse:
        # the library names Python parameters, and the request's fields carry the same names
        code = "bad_filter" if exc.parameter in FILTER_FIELDS else "bad_request"
        return _error(400, code, exc.render(exc.parameter), field=exc.parameter)

    @app.exception_handler(MbretError)
    async def _mbret_error(request: Request, exc: MbretError) -> JSONResponse:
        return _error(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        kind = first.get("type", "")
        if kind == "json_invalid":
            return _error(400, "bad_json", "the body is not valid JSON")
        return _error(422, "invalid_field", f"{_field_path(first.get('loc', ()))}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "bad_request",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal", f"internal error ({exc.__class__.__name__}); the service keeps running")

    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)  # inside _guard: after the key, and counted

    @app.middleware("http")
    async def _guard(request: Request, call_next):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        route = _route_of(request)
        if api_key is not None and request.url.path not in OPEN_PATHS and not _authorized(request, api_key):
            response: Response = _error(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")
        else:
            response = await call_next(request)
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        if response.status_code >= 400:
            metrics.errors.labels(str(response.status_code), response.headers.get("x-mbret-error", "")).inc()
        return response

    def get_index(name: str) -> ServedIndex:
        index = served.get(name)
        if index is None:
            known = ", ".join(sorted(served)) or "none"
            raise ServeError(404, "unknown_index", f"no index named {name!r} (served: {known})")
        return index

    def writable() -> None:
        if config.read_only:
            raise ServeError(403, "read_only", "the service runs with --read-only; writes are refused")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("mbret.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health")
    def health() -> JSONResponse:
        if not app.state.ready:
            return _error(503, "not_ready", "indexes are loading", {"Retry-After": "1"})
        return JSONResponse({"status": "ready", "indexes": sorted(served)})

    @app.get("/metrics", include_in_schema=False)
    def metrics_text() -> Response:
        for name, index in served.items():
            metrics.queue_depth.labels(name).set(index.pending_writes)
            metrics.documents.labels(name).set(len(index.index))
            metrics.generation.labels(name).set(index.generation)
            metrics.batches.labels(name).set(index.batcher.batches)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/indexes")
    def list_indexes() -> dict[str, Any]:
        rows = []
        for name, index in sorted(served.items()):
            manifest = index.retriever.manifest()
            rows.append(
                {
                    "name": name,
                    "mode": manifest.mode,
                    "index_type": manifest.index_type,
                    "model": manifest.model,
                    "num_live": len(index.index),
                    "generation": index.generation,
                }
            )
        return {"indexes": rows}

    @app.get("/indexes/{name}")
    def describe(name: str) -> dict[str, Any]:
        index = get_index(name)
        return {"name": name, **index_info(index.path)}

    @app.post("/indexes/{name}/search")
    def search(name: str, request: Annotated[SearchRequest, Body()]) -> dict[str, Any]:
        index = get_index(name)
        _check_search(request, config)
        hits, generation = index.search(
            request.queries,
            request.k,
            where=request.where,
            params=request.params,
            ids=request.ids,
            return_documents=request.return_documents,
            search_params=request.search_params(),
        )
        results = [
            [
                {"doc_id": h.doc_id, "score": h.score, "title": h.title, "text": h.text, "metadata": h.metadata}
                if request.return_documents
                else {"doc_id": h.doc_id, "score": h.score}
                for h in row
            ]
            for row in hits
        ]
        return {"results": results, "generation": generation}

    @app.post("/indexes/{name}/documents")
    def add_documents(name: str, request: Annotated[AddRequest, Body()]) -> dict[str, Any]:
        index = get_index(name)
        writable()
        documents = _check_add(request, config)
        generation = index.add(documents)
        return {"added": len(documents), "generation": generation}

    @app.delete("/indexes/{name}/documents")
    def delete_documents(name: str, request: Annotated[DeleteRequest, Body()]) -> dict[str, Any]:
        index = get_index(name)
        writable()
        ids = _check_ids(request.ids, config)
        generation = index.delete(ids)
        return {"deleted": len(ids), "generation": generation}

    @app.get("/indexes/{name}/documents/{doc_id:path}")
    def get_document(name: str, doc_id: str) -> dict[str, Any]:
        document = get_index(name).get(doc_id)
        return {
            "doc_id": document.doc_id,
            "title": document.title,
            "text": document.text,
            "metadata": document.metadata,
        }

    return app


def _route_of(request: Request) -> str:
    """The route template (`/indexes/{name}/search`), so metrics do not grow a label per index or id."""
    path = request.url.path
    parts = path.strip("/").split("/")
    if parts == ["indexes"]:
        return "/indexes"
    if parts[0] == "indexes" and len(parts) >= 2:
        template = ["indexes", "{name}", *parts[2:3]]
        if len(parts) >= 4:
            template.append("{id}")
        return "/" + "/".join(template)
    return path if path in OPEN_PATHS or path == "/metrics" else "other"


def _authorized(request: Request, key: str) -> bool:
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))


def _check_search(request: SearchRequest, config: ServeConfig) -> None:
    if not request.queries:
        raise ServeError(422, "invalid_field", "queries: give at least one query")
    if len(request.queries) > config.max_queries:
        raise ServeError(422, "too_many_queries", f"queries: at most {config.max_queries} per request")
    for i, query in enumerate(request.queries):
        if not query.strip():
            raise ServeError(422, "invalid_field", f"queries.{i}: empty or whitespace-only query")
        if len(query) > config.max_query_chars:
            raise ServeError(422, "invalid_field", f"queries.{i}: longer than {config.max_query_chars} characters")
    if not 1 <= request.k <= config.max_k:
        raise ServeError(422, "invalid_field", f"k: must be between 1 and {config.max_k}")
    if request.ids is not None and not request.ids:
        raise ServeError(422, "invalid_field", "ids: an empty list selects nothing; leave it out to search all")


def _check_ids(ids: list[str], config: ServeConfig) -> list[str]:
    if not ids:
        raise ServeError(422, "invalid_field", "ids: give at least one id")
    if len(ids) > config.max_documents:
        raise ServeError(422, "too_many_documents", f"ids: at most {config.max_documents} per request")
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if doc_id in seen:
            raise ServeError(422, "duplicate_id", f"ids.{i}: {doc_id!r} appears twice")
        seen.add(doc_id)
    return ids


def _check_add(request: AddRequest, config: ServeConfig) -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}
    if not request.documents:
        raise ServeError(422, "invalid_field", "documents: give at least one document")
    if len(request.documents) > config.max_documents:
        raise ServeError(422, "too_many_documents", f"documents: at most {config.max_documents} per request")
    for i, doc in enumerate(request.documents):
        if doc.id in documents:
            raise ServeError(422, "duplicate_id", f"documents.{i}._id: {doc.id!r} appears twice")
        if len(doc.title) + len(doc.text) > config.max_document_chars:
            raise ServeError(422, "invalid_field", f"documents.{i}: over {config.max_document_chars} characters")
        if not (doc.title.strip() or doc.text.strip()):
            raise ServeError(422, "invalid_field", f"documents.{i}: no title and no text to index")
        documents[doc.id] = {"title": doc.title, "text": doc.text, "metadata": dict(doc.metadata)}
    return documents


def app_from_environment() -> FastAPI:
    """The app of the config in `MBRET_SERVE_CONFIG` (how `mbret serve --workers N` starts each worker)."""
    import os

    return create_app(ServeConfig.from_json(os.environ["MBRET_SERVE_CONFIG"]))
