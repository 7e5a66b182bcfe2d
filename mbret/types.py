"""The small value types every layer and the HTTP client share: `Hit`, `Document` and `SearchParams`.

This module imports nothing beyond the standard library, so `mbret.client` (and a user's own code) can use
these types without loading torch, faiss or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Hit:
    """One search result; title, text and metadata are filled by `search(..., return_documents=True)`
    (title and text stay None for an index built with `store_text=False`)."""

    doc_id: str
    score: float
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Document:
    """A stored document: title and text are None when the index keeps no text (`store_text=False`)."""

    doc_id: str
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchParams:
    """Per-call search settings for every index type; `None` leaves a setting to the index's default.

    An index reads the fields of its own type and ignores the rest, so one `SearchParams` can be passed to
    any search (a fused search passes it to each of its indexes):

    - PLAID (ColBERT): `n_ivf_probe` (centroids probed per query token), `centroid_score_threshold`
      (centroids scoring below it are pruned), `n_candidates` (documents kept after centroid scoring),
      `n_full_scores` (documents scored on their compressed vectors); unset ones take defaults by k;
    - FAISS ivfpq: `nprobe` (inverted lists visited); FAISS hnsw: `ef_search` (the graph walk's width).

    The same names are the CLI flags (`--n-ivf-probe`, `--nprobe`, ...), the HTTP search request's fields and
    the index manifest's saved defaults.
    """

    n_ivf_probe: int | None = None
    centroid_score_threshold: float | None = None
    n_candidates: int | None = None
    n_full_scores: int | None = None
    nprobe: int | None = None
    ef_search: int | None = None

    def __post_init__(self) -> None:
        from mbret.errors import ParameterError

        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "centroid_score_threshold":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ParameterError(f.name, f"{value!r}: must be a number")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f.name, f"{value!r}: must be a positive integer")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every setting's name, as the CLI, the HTTP API and manifests spell it."""
        return tuple(f.name for f in fields(cls))

    def given(self) -> dict[str, Any]:
        """The settings that are set (not None), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def over(self, defaults: SearchParams | None) -> SearchParams:
        """These settings where set, `defaults`' elsewhere: a per-call `SearchParams` over an index's own."""
        if defaults is None:
            return self
        return SearchParams(**{**defaults.given(), **self.given()})
