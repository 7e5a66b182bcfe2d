"""What `mbret serve` serves and its limits: one frozen dataclass, passed to every worker process as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mbret.errors import ParameterError


@dataclass(frozen=True)
class ServeConfig:
    """`indexes`: index directories, each served under its directory name. The limits bound what one
    request may ask for, so that no client can exhaust the service."""

    indexes: tuple[str, ...] = ()
    device: str | None = None
    api_key_file: str | None = None
    read_only: bool = False
    max_k: int = 1000
    max_queries: int = 256  # per search request
    max_query_chars: int = 20_000  # per query; a query is cut at the model's tokens anyway
    max_documents: int = 1000  # per add or delete request
    max_document_chars: int = 1_000_000  # title + text of one document
    max_body_bytes: int = 16 * 1024 * 1024
    max_pending_writes: int = 64  # write requests queued per index before 503
    batch_window_ms: float = 2.0  # how long query encoding waits for more requests to batch with
    max_batch_queries: int = 64  # queries encoded in one batch

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        data["indexes"] = tuple(data.get("indexes", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def read_api_key(path: str | Path) -> str:
    """The key in file `path` (surrounding whitespace dropped); an unreadable or empty file is an error."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError("api_key_file", f"{path}: cannot read it ({exc.__class__.__name__})") from None
    if not key:
        raise ParameterError("api_key_file", f"{path}: the file is empty")
    return key
