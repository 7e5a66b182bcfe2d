"""A Python client for `mbret serve`: the same search, add, delete, get and info as on a directory.

    import mbret
    client = mbret.Client("http://127.0.0.1:8000")
    hits = client.search("scifact", ["vitamin D and bone density"], k=5)
    client.add("scifact", [{"_id": "new", "title": "A title", "text": "Its text", "metadata": {"year": 2024}}])

Standard library only (`urllib`; `Hit` and `Document` come from `mbret.types`, which is too), so a client
machine needs nothing the service needs and `import mbret.client` loads no torch, faiss or numpy. A
`Client` may be used by many threads at once: each call is one HTTP request on its own connection.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mbret.errors import MbretError, ParameterError
from mbret.types import Document, Hit, SearchParams


class ServiceError(MbretError):
    """The service refused a request: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status, self.code, self.message = status, code, message


class Client:
    """Talks to `mbret serve` at `url` (with `api_key` when the service was started with --api-key-file)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ParameterError("url", f"{url}: give the service's address, e.g. http://127.0.0.1:8000")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                error = json.loads(raw)["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", raw.decode("utf-8", "replace")[:200] or exc.reason
            raise ServiceError(exc.code, code, message) from None
        except urllib.error.URLError as exc:
            raise MbretError(f"{self.url}: cannot reach the service ({exc.reason})") from None

    @staticmethod
    def _name(index: str) -> str:
        return urllib.parse.quote(index, safe="")

    def search(
        self,
        index: str,
        queries: Sequence[str],
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        return_documents: bool = False,
        search_params: SearchParams | None = None,
        **search_options: Any,
    ) -> list[list[Hit]]:
        """Top-k hits per query, as `Retriever.search` returns them; `search_params` set this request's
        search settings (sent as the request's fields of the same names). The settings given one by one as
        keywords (`n_ivf_probe=4`) are deprecated."""
        if search_options:
            warnings.warn(
                "Client.search(n_ivf_probe=..., ...) is deprecated; pass search_params=SearchParams(...)",
                DeprecationWarning,
                stacklevel=2,
            )
            unknown = sorted(set(search_options) - set(SearchParams.names()))
            if unknown:
                raise TypeError(f"Client.search() got an unexpected keyword argument {unknown[0]!r}")
            old = SearchParams(**{name: v for name, v in search_options.items() if v is not None})
            search_params = old if search_params is None else search_params.over(old)
        body: dict[str, Any] = {"queries": list(queries), "k": k, "return_documents": return_documents}
        if where is not None:
            body["where"], body["params"] = where, list(params)
        if ids is not None:
            body["ids"] = list(ids)
        if search_params is not None:
            body.update(search_params.given())
        answer = self._request("POST", f"/indexes/{self._name(index)}/search", body)
        return [
            [Hit(h["doc_id"], h["score"], h.get("title"), h.get("text"), h.get("metadata") or {}) for h in row]
            for row in answer["results"]
        ]

    def add(self, index: str, documents: Sequence[Mapping[str, Any]]) -> int:
        """Add documents (`{"_id", "title", "text", "metadata"}` each); returns the generation that holds
        them, committed to disk before the service answered."""
        answer = self._request("POST", f"/indexes/{self._name(index)}/documents", {"documents": list(documents)})
        return int(answer["generation"])

    def delete(self, index: str, ids: Sequence[str]) -> int:
        """Delete documents by id; returns the committed generation without them."""
        answer = self._request("DELETE", f"/indexes/{self._name(index)}/documents", {"ids": list(ids)})
        return int(answer["generation"])

    def get(self, index: str, doc_id: str) -> Document:
        answer = self._request("GET", f"/indexes/{self._name(index)}/documents/{urllib.parse.quote(doc_id)}")
        return Document(answer["doc_id"], answer.get("title"), answer.get("text"), answer.get("metadata") or {})

    def info(self, index: str | None = None) -> dict[str, Any]:
        """What `mbret info` prints for `index`, or the list of served indexes."""
        return self._request("GET", "/indexes" if index is None else f"/indexes/{self._name(index)}")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")
