"""`mbret search`: one index, several fused, or a running service."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mbret.cli.app import app
from mbret.cli.options import (
    ENCODING,
    FILTERS,
    FUSION,
    SEARCH_SETTINGS,
    ApiKeyFileOpt,
    QueryExpansionOpt,
    QueryLenOpt,
    with_options,
)
from mbret.types import Hit, SearchParams


@app.command()
@with_options(SEARCH_SETTINGS, into="search_params")
@with_options(FUSION)
@with_options(ENCODING)
@with_options(FILTERS)
def search(
    index_dir: Annotated[
        str,
        typer.Argument(
            metavar="DIR",
            help="Index directory from `mbret index` (with --url: a served index's name; with --fuse: a query).",
        ),
    ],
    queries: Annotated[list[str] | None, typer.Argument(metavar="QUERY...", help="One or more queries.")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Hits per query.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    query_expansion: QueryExpansionOpt = None,
    query_length: QueryLenOpt = None,
    show_text: Annotated[
        bool, typer.Option("--show-text", help="Print each hit's title, text (see --snippet) and metadata.")
    ] = False,
    snippet: Annotated[
        int,
        typer.Option("--snippet", min=0, help="Characters of text shown per hit with --show-text or --json (0: all)."),
    ] = 200,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Search a running `mbret serve` at this address; DIR names the served index."),
    ] = None,
    api_key_file: ApiKeyFileOpt = None,
    *,
    search_params: SearchParams,
    **options: object,
) -> None:
    """Search an index with the model it was built with, optionally among the documents a metadata
    condition (--where) or an id list (--ids) selects; with --url, the same search through a running
    `mbret serve`; with --fuse, several indexes of one corpus, their rankings fused.

    Examples: mbret search runs/scifact-mini "vitamin D and bone density" -k 5 --show-text;
    mbret search idx "parsing" --where "year >= ? AND venue IN (?, ?)" --param 2020 --param ACL --param EMNLP;
    mbret search --url http://127.0.0.1:8000 scifact-mini "vitamin D" -k 5;
    mbret search --fuse runs/bm25,runs/colbert "vitamin D and bone density" (DIR is then the first query)
    """
    from mbret.retrieval.searching import search_indexes

    found = search_indexes(
        index_dir, queries, k=k, search_params=search_params, query_expansion=query_expansion,
        query_length=query_length, return_documents=show_text or as_json, url=url, api_key_file=api_key_file,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    for note in found.notes:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        typer.echo(json.dumps(_as_json(found.queries, found.results, snippet), ensure_ascii=False, indent=2))
        return
    for query, hits in zip(found.queries, found.results):
        typer.echo(f"query: {query}")
        for rank, hit in enumerate(hits, 1):
            typer.echo(f"  {rank:>3}  {hit.score:8.4f}  {hit.doc_id}")
            if show_text:
                if hit.title:
                    typer.echo(f"       {hit.title}")
                if hit.text:
                    typer.echo(f"       {_cut(hit.text, snippet)}")
                if hit.metadata:
                    typer.echo(f"       {json.dumps(hit.metadata, ensure_ascii=False, sort_keys=True)}")


def _cut(text: str | None, snippet: int) -> str | None:
    return text if text is None or not snippet or len(text) <= snippet else text[:snippet].rstrip() + "…"


def _as_json(queries: list[str], results: list[list[Hit]], snippet: int) -> list[dict[str, object]]:
    return [
        {
            "query": query,
            "hits": [
                {
                    "rank": rank,
                    "doc_id": h.doc_id,
                    "score": round(h.score, 6),
                    "title": h.title,
                    "text": _cut(h.text, snippet),
                    "metadata": h.metadata,
                }  # fmt: skip
                for rank, h in enumerate(hits, 1)
            ],
        }
        for query, hits in zip(queries, results)
    ]
