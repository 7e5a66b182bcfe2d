"""Every option that more than one command takes, defined once, and `with_options`, which adds a group of
them to a command.

A parameter's Python name is the library's name for the same thing (`output`, `search_params`' fields,
`keep_identical_ids`), so a `ParameterError` raised by the library maps back to the flag the user typed.
Nothing heavy is imported here: `mbret --help` must not load torch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mbret.types import SearchParams

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hub id, local dir, 'minilm' (offline all-MiniLM-L6-v2) or 'tiny-modernbert' (random, for smoke tests).",
    ),
]
ModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="Retrieval head: dense (one vector), colbert (one per token), or bm25 (words; no --model, settings "
        "by --index-param method, k1, b, delta, stemmer, stopwords).",
    ),
]
IndexTypeOpt = Annotated[
    str | None,
    typer.Option(
        "--index-type", help="dense: flat (exact, default), hnsw, ivfpq; colbert: plaid (default), exact; bm25: bm25."
    ),
]
NbitsOpt = Annotated[int, typer.Option("--nbits", help="plaid: bits per dimension of residuals (1, 2, 4, 8).")]
PoolFactorOpt = Annotated[
    int | None,
    typer.Option(
        "--pool-factor",
        help="colbert: cluster each document's token vectors into about 1/N of them (hierarchical Ward pooling, "
        "as PyLate's pool_factor): 2 halves the index. Recorded in the manifest and applied to --add.",
    ),
]
IndexParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--index-param",
        help="KEY=VALUE for the index built (hnsw: M, ef_construction; ivfpq: nlist, m, nbits; bm25: method, k1, "
        "b, delta, stemmer, stopwords).",
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")]
SplitOpt = Annotated[str, typer.Option("--split", help="qrels split.")]
MetricsOpt = Annotated[
    str, typer.Option("--metrics", help="Comma-separated NAME@K (ndcg, recall, precision, map, mrr).")
]
KeepIdenticalOpt = Annotated[
    bool,
    typer.Option(
        "--keep-identical-ids", help="Keep hits whose doc id equals the query id (BEIR drops them, as by default)."
    ),
]
QueryLenOpt = Annotated[
    int | None,
    typer.Option(
        "--query-length",
        help="The longest query kept, longer ones are cut (default: the document length); colbert with "
        "--query-expansion: the width queries are padded to with [MASK] (default 32). --suite: the registry's.",
    ),
]
DocLenOpt = Annotated[
    int | None,
    typer.Option(
        "--document-length",
        help="Max tokens per document (up to 8192); default: the model's own (colbert: 300; --suite: the registry's).",
    ),
]
QueryExpansionOpt = Annotated[
    bool | None,
    typer.Option(
        "--query-expansion/--no-query-expansion",
        help="colbert: pad queries with [MASK] to --query-length, as ColBERT trains. Default: what a ColBERT/PyLate "
        "checkpoint says (or an index was built with); off for a head built from any other model, whose [MASK] "
        "vectors were never trained.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="cpu, cuda, cuda:1 ... (default: cuda if available). Several, comma-separated (cuda:0,cuda:1), "
        "encode the corpus on all of them from one process (a sentence-transformers pool). Under torchrun "
        "each rank takes its own GPU.",
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16 (faster on a CPU with AVX512-BF16 or "
        "AMX; see docs/benchmarks.md).",
    ),
]
ApiKeyFileOpt = Annotated[Path | None, typer.Option("--api-key-file", help="A file holding the service's API key.")]


def output_option(help: str, required: bool = False) -> Any:  # noqa: A002 - typer's own keyword
    """`--output`/`-o` (Python `output`): where a command writes; `--out` is a hidden deprecated alias."""
    return Annotated[Path if required else Path | None, typer.Option("--output", "-o", help=help)]


# Groups of options that several commands take together: `with_options` adds them to a command's flags.
ENCODING = {"device": (DeviceOpt, None), "dtype": (DtypeOpt, "auto")}
LENGTHS = {
    "query_length": (QueryLenOpt, None),
    "query_expansion": (QueryExpansionOpt, None),
    "document_length": (DocLenOpt, None),
}
FILTERS = {
    "where": (
        Annotated[
            str | None,
            typer.Option(
                "--where",
                help="Search only documents whose metadata satisfies this SQLite condition over metadata fields, "
                "with ? for values: comparisons, IN, LIKE, BETWEEN, IS NULL, AND/OR/NOT, parentheses. "
                'E.g. --where "year >= ? AND venue = ?" --param 2020 --param ACL',
            ),
        ],
        None,
    ),
    "params": (
        Annotated[
            list[str] | None,
            typer.Option(
                "--param",
                help='A value for the next ? of --where (repeat per ?): a JSON number, true/false/null or "string"; '
                "any other text is a string.",
            ),
        ],
        None,
    ),
    "ids": (
        Annotated[
            Path | None, typer.Option("--ids", help="Search only these documents: a file of doc ids, one per line.")
        ],
        None,
    ),
}
FUSION = {
    "fuse": (
        Annotated[
            str | None,
            typer.Option(
                "--fuse",
                help="Hybrid search: comma-separated index directories of one corpus (e.g. a bm25 and a colbert "
                "one), each searched with its own model, rankings fused by --fusion.",
            ),
        ],
        None,
    ),
    "fusion": (
        Annotated[
            str,
            typer.Option(
                "--fusion",
                help="With --fuse: rrf (reciprocal rank, k=60) or linear (min-max normalised scores, --alpha "
                "weighting).",
            ),
        ],
        "rrf",
    ),
    "alpha": (
        Annotated[
            float,
            typer.Option("--alpha", help="--fusion linear: weight of the first index; the others share 1 - alpha."),
        ],
        0.5,
    ),
    "fusion_depth": (
        Annotated[
            int,
            typer.Option("--fusion-depth", help="With --fuse: hits taken from each index before fusing (at least k)."),
        ],
        100,
    ),
}
# SearchParams' fields, one flag each: per call on search and eval, the index's saved defaults on index.
SEARCH_SETTINGS = {
    "n_ivf_probe": (
        Annotated[
            int | None,
            typer.Option("--n-ivf-probe", help="plaid: centroids probed per query token (default by k: 1/2/4)."),
        ],
        None,
    ),
    "centroid_score_threshold": (
        Annotated[
            float | None,
            typer.Option(
                "--centroid-score-threshold", help="plaid: prune centroids scoring below this (default by k)."
            ),
        ],
        None,
    ),
    "n_candidates": (
        Annotated[
            int | None,
            typer.Option("--n-candidates", help="plaid: docs kept after pruned centroid scoring (default by k)."),
        ],
        None,
    ),
    "n_full_scores": (
        Annotated[
            int | None,
            typer.Option(
                "--n-full-scores",
                help="plaid: docs scored exactly on their compressed vectors (default: per query, 2048 at k<=10 or "
                "4096 at k<=100 divided by the query's tokens, at least max(k, 64); an index of nbits 4 or 8 takes "
                "k<=100's budgets at k<=10).",
            ),
        ],
        None,
    ),
    "nprobe": (
        Annotated[int | None, typer.Option("--nprobe", help="ivfpq: inverted lists visited per query.")],
        None,
    ),
    "ef_search": (
        Annotated[int | None, typer.Option("--ef-search", help="hnsw: width of the graph search.")],
        None,
    ),
}
assert tuple(SEARCH_SETTINGS) == SearchParams.names()  # one flag per field, in the type's order


def with_options(group: dict[str, tuple[Any, Any]], into: str | None = None) -> Callable[[F], F]:
    """Add `group`'s options (name -> (annotated type, default)) to a command's flags.

    With `into`, the command receives them gathered as one `SearchParams` keyword named `into` (the only
    gathering there is); without, each as its own keyword (a `**kwargs` of the command takes them, so its
    body can pass them on without naming each again)."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)  # typer reads these annotations as objects
        own = [p for p in signature.parameters.values() if p.name != into and p.kind != p.VAR_KEYWORD]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for name, (annotation, default) in group.items()
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            if into is not None:
                kwargs[into] = SearchParams(**{name: kwargs.pop(name) for name in group})
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
        return wrapper  # type: ignore[return-value]

    return decorate
