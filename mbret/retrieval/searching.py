"""Searching by index directory: one index, several fused, or a running `mbret serve`, with the filters and
id lists a search takes as text. What `mbret search` does, as one call (`search_indexes`), and the pieces
`mbret eval` shares with it (fusion options, id files, `--param` values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import ParameterError
from mbret.types import Hit, SearchParams

FUSION_DEFAULTS = {"fusion": "rrf", "alpha": 0.5, "fusion_depth": 100}


def check_fusion_options(fuse: str | None, fusion: str = "rrf", alpha: float = 0.5, fusion_depth: int = 100) -> None:
    """`fusion`, `alpha` and `fusion_depth` only mean something with `fuse` (and `alpha` with linear fusion)."""
    if fuse is None:
        given = {"fusion": fusion, "alpha": alpha, "fusion_depth": fusion_depth}
        for name, value in given.items():
            if value != FUSION_DEFAULTS[name]:
                raise ParameterError(name, "applies to a fused search of several indexes (fuse DIR_A,DIR_B)")
    elif fusion == "rrf" and alpha != FUSION_DEFAULTS["alpha"]:
        raise ParameterError("alpha", "weighs linear fusion; rrf fuses ranks and takes no weight")


def fused_dirs(fuse: str) -> list[Path]:
    """The index directories of `fuse`, comma-separated."""
    dirs = [Path(p.strip()) for p in fuse.split(",") if p.strip()]
    if len(dirs) < 2:
        raise ParameterError("fuse", f"{fuse}: give two or more index directories, comma-separated")
    return dirs


def read_ids(path: Path) -> list[str]:
    """An id file: one doc id per line (blank lines skipped); an empty file is an error."""
    from mbret.data.datasets import iter_lines

    if not path.is_file():
        raise ParameterError("ids", f"{path}: file not found")
    chosen = [line.strip() for _, line in iter_lines(path) if line.strip()]
    if not chosen:
        raise ParameterError("ids", f"{path}: no doc ids in the file (one per line)")
    return chosen


def filter_values(where: str | None, params: Sequence[str] | None) -> list[Any]:
    """The values of `where`'s `?`s, given as text: a JSON number, true/false/null or "string", else the text."""
    from mbret.indexes.filters import parse_param

    values = [parse_param(p) for p in params or []]
    if values and where is None:
        raise ParameterError("params", "values for the ? of a where condition; give the condition (where)")
    return values


@dataclass
class SearchOutcome:
    """Each query's hits, and notes for the user (queries cut to the model's length, unknown ids)."""

    queries: list[str]
    results: list[list[Hit]]
    notes: list[str] = field(default_factory=list)


def search_indexes(
    index_dir: str,
    queries: Sequence[str] | None = None,
    *,
    k: int = 10,
    search_params: SearchParams | None = None,
    query_expansion: bool | None = None,
    query_length: int | None = None,
    where: str | None = None,
    params: Sequence[str] | None = None,
    ids: Path | None = None,
    return_documents: bool = False,
    device: str | None = None,
    dtype: str = "auto",
    url: str | None = None,
    api_key_file: Path | None = None,
    fuse: str | None = None,
    fusion: str = "rrf",
    alpha: float = 0.5,
    fusion_depth: int = 100,
) -> SearchOutcome:
    """Search the index at `index_dir` with the model it was built with; with `url`, the index served under
    that name by a running `mbret serve`; with `fuse` (comma-separated directories), those indexes fused,
    and `index_dir` is then the first query. `params` are the values of `where`'s `?`s as text; `ids`, a
    file of the doc ids to search among."""
    check_fusion_options(fuse, fusion, alpha, fusion_depth)
    queries = [index_dir, *(queries or [])] if fuse is not None else list(queries or [])
    if not queries:
        raise ParameterError("queries", "give one or more queries after the index")
    values = filter_values(where, params)
    chosen = read_ids(ids) if ids is not None else None
    if url is not None:
        from mbret.client import Client
        from mbret.serve.config import read_api_key

        local_only = {"query_expansion": query_expansion, "query_length": query_length, "device": device,
                      "dtype": None if dtype == "auto" else dtype, "fuse": fuse}  # fmt: skip
        for name, value in local_only.items():
            if value is not None:
                raise ParameterError(name, "applies to local indexes; a service (url) searches as it was started")
        key = read_api_key(api_key_file) if api_key_file is not None else None
        results = Client(url, api_key=key).search(
            index_dir, queries, k=k, where=where, params=values, ids=chosen, return_documents=return_documents,
            search_params=search_params,
        )  # fmt: skip
        return SearchOutcome(queries, results)
    if api_key_file is not None:
        raise ParameterError("api_key_file", "goes with a service's url")
    retriever: Any
    if fuse is not None:
        from mbret.retrieval.fusion import FusedRetriever

        for name, value in (("query_expansion", query_expansion), ("query_length", query_length)):
            if value is not None:
                raise ParameterError(name, "each fused index encodes queries as it was built")
        retriever = FusedRetriever.load(
            fused_dirs(fuse), fusion=fusion, alpha=alpha, fusion_depth=fusion_depth, device=device, dtype=dtype
        )
        first = retriever.retrievers[0]
    else:
        from mbret.retrieval import Retriever

        retriever = first = Retriever.load(
            index_dir, device=device, dtype=dtype, query_expansion=query_expansion, query_length=query_length
        )
    notes = []
    if chosen is not None:
        unknown = sum(1 for d in chosen if d not in first.index)
        if unknown:
            notes.append(f"{unknown} of {len(chosen)} ids in {ids} are not in the index")
    note = retriever.cut_queries_note(queries)
    if note:
        notes.append(note)
    results = retriever.search(
        queries, k=k, where=where, params=values, ids=chosen, return_documents=return_documents,
        search_params=search_params,
    )  # fmt: skip
    return SearchOutcome(queries, results, notes)
