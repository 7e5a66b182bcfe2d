"""The `mbret` command: parses arguments, calls the library, prints. No retrieval logic lives here."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from mbret.errors import MbretError, MbretWarning
from mbret.indexes.plaid import PlaidSearchParams
from mbret.io import atomic_file, index_lock

app = typer.Typer(
    help="mbret: dense and ColBERT retrieval on ModernBERT (or any HF encoder), with indexes and BEIR evaluation.\n\n"
    'Quick start:  mbret index corpus.jsonl --model minilm --out idx;  mbret search idx "a query";  '
    "mbret eval path/to/beir/scifact --model minilm --output results/",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
QueryLenOpt = Annotated[
    int | None,
    typer.Option(
        "--query-length",
        help="colbert: the longest query kept, longer ones are cut (default: the document length); with "
        "--query-expansion, the width queries are padded to with [MASK] (default 32). --suite: the registry's.",
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
NbitsOpt = Annotated[int, typer.Option("--nbits", help="plaid: bits per dimension of residuals (1, 2, 4, 8).")]
ProbeOpt = Annotated[
    int | None, typer.Option("--n-ivf-probe", help="plaid: centroids probed per query token (default by k: 1/2/4).")
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option("--centroid-score-threshold", help="plaid: prune centroids scoring below this (default by k)."),
]
CandidatesOpt = Annotated[
    int | None, typer.Option("--n-candidates", help="plaid: docs kept after pruned centroid scoring (default by k).")
]
FullScoresOpt = Annotated[
    int | None,
    typer.Option(
        "--n-full-scores",
        help="plaid: docs scored exactly on their compressed vectors (default: per query, 2048 at k<=10 or "
        "4096 at k<=100 divided by the query's tokens, at least max(k, 64); an index of nbits 4 or 8 takes "
        "k<=100's budgets at k<=10).",
    ),
]
DocLenOpt = Annotated[
    int | None,
    typer.Option("--document-length", help="colbert: max document tokens (default 300; --suite: the registry's)."),
]
PoolFactorOpt = Annotated[
    int | None,
    typer.Option(
        "--pool-factor",
        help="colbert: cluster each document's token vectors into about 1/N of them (hierarchical Ward pooling, "
        "as PyLate's pool_factor): 2 halves the index. Recorded in the manifest and applied to --add.",
    ),
]
FuseOpt = Annotated[
    str | None,
    typer.Option(
        "--fuse",
        help="Hybrid search: comma-separated index directories of one corpus (e.g. a bm25 and a colbert one), "
        "each searched with its own model, rankings fused by --fusion.",
    ),
]
FusionOpt = Annotated[
    str,
    typer.Option(
        "--fusion",
        help="With --fuse: rrf (reciprocal rank, k=60) or linear (min-max normalised scores, --alpha weighting).",
    ),
]
AlphaOpt = Annotated[
    float,
    typer.Option("--alpha", help="--fusion linear: weight of the first index; the others share 1 - alpha."),
]
FusionDepthOpt = Annotated[
    int, typer.Option("--fusion-depth", help="With --fuse: hits taken from each index before fusing (at least k).")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.")]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        help="Search only documents whose metadata satisfies this SQLite condition over metadata fields, with ? "
        "for values: comparisons, IN, LIKE, BETWEEN, IS NULL, AND/OR/NOT, parentheses. "
        'E.g. --where "year >= ? AND venue = ?" --param 2020 --param ACL',
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help='A value for the next ? of --where (repeat per ?): a JSON number, true/false/null or "string"; '
        "any other text is a string.",
    ),
]
IdsOpt = Annotated[
    Path | None, typer.Option("--ids", help="Search only these documents: a file of doc ids, one per line.")
]
MaxLenOpt = Annotated[
    int | None, typer.Option("--max-length", help="Max tokens per text (up to 8192); default: the model's own.")
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
        help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16. On a CPU with AVX512-BF16 or AMX, "
        "bfloat16 encodes 1.7-1.9x faster at the same NDCG@10.",
    ),
]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _check_fusion_options(fuse: str | None, fusion: str, alpha: float, fusion_depth: int) -> None:
    """--fusion, --alpha and --fusion-depth only mean something with --fuse (and --alpha with linear)."""
    if fuse is None:
        given = [f for f, on in (("--fusion", fusion != "rrf"), ("--alpha", alpha != 0.5),
                                 ("--fusion-depth", fusion_depth != 100)) if on]  # fmt: skip
        if given:
            raise MbretError(f"{', '.join(given)}: apply with --fuse DIR_A,DIR_B")
    elif fusion == "rrf" and alpha != 0.5:
        raise MbretError("--alpha weighs --fusion linear; rrf fuses ranks and takes no weight")


def _fused_dirs(fuse: str) -> list[Path]:
    """--fuse's directories, each an mbret index."""
    dirs = [Path(p.strip()) for p in fuse.split(",") if p.strip()]
    if len(dirs) < 2:
        raise MbretError(f"--fuse {fuse}: give two or more index directories, comma-separated")
    return dirs


def _index_params(
    index_type: str,
    items: list[str] | None,
    nbits: int,
    n_ivf_probe: int | None,
    centroid_score_threshold: float | None,
    n_candidates: int | None,
    n_full_scores: int | None,
) -> dict[str, int | float | str]:
    """--index-param pairs, plus the PLAID flags when the index is a PLAID one."""
    params = _parse_params(items)
    if index_type == "plaid":
        params.setdefault("nbits", nbits)
        flags = {
            "n_ivf_probe": n_ivf_probe,
            "centroid_score_threshold": centroid_score_threshold,
            "n_candidates": n_candidates,
            "n_full_scores": n_full_scores,
        }
        params.update({name: value for name, value in flags.items() if value is not None})
    return params


def _parse_params(items: list[str] | None) -> dict[str, int | float | str]:
    params: dict[str, int | float | str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MbretError(f"--index-param {item!r}: use KEY=VALUE, e.g. --index-param nprobe=32")
        for cast in (int, float):
            try:
                params[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key] = value
    return params


@app.command()
def index(
    corpus: Annotated[str, typer.Argument(help="corpus.jsonl, a BEIR directory, or irds:/hf: id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to write.")],
    model: ModelOpt = None,
    mode: ModeOpt = "dense",
    index_type: IndexTypeOpt = None,
    batch_size: BatchOpt = 64,
    max_length: MaxLenOpt = None,
    query_length: QueryLenOpt = None,
    query_expansion: QueryExpansionOpt = None,
    document_length: DocLenOpt = None,
    pool_factor: PoolFactorOpt = None,
    nbits: NbitsOpt = 2,
    n_ivf_probe: ProbeOpt = None,
    centroid_score_threshold: ThresholdOpt = None,
    n_candidates: CandidatesOpt = None,
    n_full_scores: FullScoresOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "auto",
    index_param: Annotated[
        list[str] | None,
        typer.Option(
            "--index-param",
            help="FAISS parameter KEY=VALUE (hnsw: M, ef_construction, ef_search; ivfpq: nlist, m, nbits, nprobe).",
        ),
    ] = None,
    query_prompt: Annotated[str | None, typer.Option(help="Text put before every query.")] = None,
    document_prompt: Annotated[str | None, typer.Option(help="Text put before every document.")] = None,
    add: Annotated[bool, typer.Option("--add", help="Add the corpus to the existing index at --out.")] = False,
    recluster: Annotated[
        bool,
        typer.Option(
            "--recluster",
            help="plaid, with --add: retrain centroids on the whole index afterwards "
            "(when the manifest's drift grows).",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index at --out.")] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish a sharded build (torchrun) that was killed: the shards its staging area (.OUT.staging "
            "beside --out) holds already are not encoded again. Same corpus, model and index settings.",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write the build's seconds per phase and peak memory (per rank under torchrun) as JSON."
        ),
    ] = None,
    store_text: Annotated[
        bool,
        typer.Option(
            "--store-text/--no-store-text",
            help="Keep each document's title and text in the index's document store (for --show-text); "
            "--no-store-text keeps only ids and metadata, for corpora too large to copy. --add keeps the "
            "index's choice.",
        ),
    ] = True,
) -> None:
    """Encode a corpus and write a searchable index directory, with its documents' text and metadata
    (a corpus row's "metadata" object: strings, numbers, booleans, null) in a document store.

    Example: mbret index examples/scifact-mini/corpus.jsonl --model minilm --out runs/scifact-mini

    On many GPUs or nodes, launch the same command under torchrun: each rank encodes its shard of the
    corpus and rank 0 commits one generation (--add too; --resume finishes a killed build):
    torchrun --nproc-per-node 8 -m mbret index corpus.jsonl --model M --mode colbert --out DIR
    """
    from mbret.distributed import launched
    from mbret.retrieval import Retriever
    from mbret.retrieval.retriever import check_mode, check_new_out, load_encoder

    index_type = check_mode(mode, index_type)
    if launched() or resume:
        if recluster and not add:
            raise MbretError("--recluster goes with --add (a new index is clustered on its own corpus)")
        from mbret.indexes.base import read_manifest

        if mode == "bm25" or (add and (out / "manifest.json").is_file() and read_manifest(out).mode == "bm25"):
            raise MbretError("--mode bm25 builds in one process: run mbret index without torchrun or --resume")
        if model is None and not add:
            raise MbretError("--model is required to build a new index (e.g. --model minilm)")
        _index_sharded(
            corpus,
            out,
            add=add,
            resume=resume,
            overwrite=overwrite,
            recluster=recluster,
            report=report,
            index_type=index_type,
            index_params=_index_params(
                index_type, index_param, nbits, n_ivf_probe, centroid_score_threshold, n_candidates, n_full_scores
            ),
            batch_size=batch_size,
            store_text=store_text,
            load=lambda device: (
                Retriever.load(
                    out,
                    model=model,
                    device=device,
                    dtype=dtype,
                    batch_size=batch_size,
                    query_expansion=query_expansion,
                    query_length=query_length,
                )
                if add
                else load_encoder(
                    model,  # type: ignore[arg-type]
                    mode,
                    device=device,
                    dtype=dtype,
                    max_length=max_length,
                    query_length=query_length,
                    document_length=document_length,
                    query_prompt=query_prompt,
                    document_prompt=document_prompt,
                    query_expansion=query_expansion,
                    pool_factor=pool_factor,
                )
            ),
            device=device,
        )
        return
    from mbret.data.datasets import load_corpus

    docs = load_corpus(corpus)  # validated in full before anything is written
    if add:
        with index_lock(out):  # held from load to save: concurrent writers queue, none loses another's change
            retriever = Retriever.load(
                out,
                model=model,
                device=device,
                dtype=dtype,
                batch_size=batch_size,
                query_expansion=query_expansion,
                query_length=query_length,
            )
            if pool_factor is not None and retriever.mode != "colbert":
                raise MbretError("--pool-factor applies to --mode colbert (documents' token vectors)")
            built_with = getattr(retriever.encoder, "pool_factor", 1)
            if pool_factor is not None and pool_factor != built_with:
                raise MbretError(
                    f"--pool-factor {pool_factor}: {out} pools documents by {built_with}; --add pools as the index does"
                )
            retriever.add(docs)
            if recluster:
                retriever.recluster()
            retriever.save(out)
        drift = getattr(retriever.index, "drift", None)
        typer.echo(
            f"added {len(docs)} documents to {out} ({len(retriever.index)} in all)"
            + (f"; drift {drift:+.3f}" if drift is not None else "")
            + ("; reclustered" if recluster else "")
        )
        return
    if recluster:
        raise MbretError("--recluster goes with --add (a new index is clustered on its own corpus)")
    if model is None and mode != "bm25":
        raise MbretError("--model is required to build a new index (e.g. --model minilm)")
    check_new_out(out, overwrite)
    encoder = load_encoder(
        model,
        mode,
        device=device,
        dtype=dtype,
        max_length=max_length,
        query_length=query_length,
        document_length=document_length,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        query_expansion=query_expansion,
        pool_factor=pool_factor,
    )
    retriever = Retriever.build(
        docs,
        encoder,
        index_type=index_type,
        index_params=_index_params(
            index_type, index_param, nbits, n_ivf_probe, centroid_score_threshold, n_candidates, n_full_scores
        ),
        batch_size=batch_size,
        store_text=store_text,
    )
    retriever.save(out, replace=overwrite)
    t = retriever.timings
    if report is not None:
        from mbret.io import write_json_atomic

        write_json_atomic(report, {"num_docs": len(retriever.index), "world_size": 1, "ranks": [t]})
    shape = f"{encoder.dimension}-d" if encoder.dimension else f"{retriever.index.num_terms:,} terms"
    typer.echo(
        f"indexed {len(retriever.index)} documents into {out} ({index_type}, {shape}) "
        f"in {t['encode_corpus_s'] + t['index_build_s']:.1f}s"
    )


def _index_sharded(
    corpus: str,
    out: Path,
    *,
    add: bool,
    resume: bool,
    overwrite: bool,
    recluster: bool,
    report: Path | None,
    index_type: str,
    index_params: dict[str, int | float | str],
    batch_size: int,
    store_text: bool,
    load: object,
    device: str | None,
) -> None:
    """`mbret index` on the ranks of a torchrun job (or resuming one in a single process): see
    `mbret.retrieval.distributed`."""
    from mbret.distributed import join, leave
    from mbret.retrieval import Retriever
    from mbret.retrieval.distributed import build_sharded

    world = join(device)
    try:
        loaded = load(world.device)  # type: ignore[operator]
        base = loaded if isinstance(loaded, Retriever) else None
        if base is not None:
            index_type = base.index.index_type
            index_params, store_text = {}, base.index.documents.store_text
        result = build_sharded(
            corpus,
            out,
            world,
            base.encoder if base is not None else loaded,
            index_type=index_type,
            index_params=index_params,
            base=base,
            batch_size=batch_size,
            store_text=store_text,
            overwrite=overwrite,
            resume=resume,
            recluster=recluster,
        )
    finally:
        leave(world)
    if not world.is_main:
        return
    if report is not None:
        from mbret.io import write_json_atomic

        write_json_atomic(report, result.to_json())
    skipped = f"; {len(result.skipped_shards)} of {result.num_shards} shards were written already" if resume else ""
    verb = "added" if add else "indexed"
    typer.echo(
        f"{verb} {result.num_docs} documents {'to' if add else 'into'} {out} ({index_type}) on "
        f"{result.world_size} process{'es' if result.world_size > 1 else ''} in {result.seconds:.1f}s{skipped}"
    )


@app.command()
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
    n_ivf_probe: ProbeOpt = None,
    centroid_score_threshold: ThresholdOpt = None,
    n_candidates: CandidatesOpt = None,
    n_full_scores: FullScoresOpt = None,
    query_expansion: QueryExpansionOpt = None,
    query_length: QueryLenOpt = None,
    where: WhereOpt = None,
    param: ParamOpt = None,
    ids: IdsOpt = None,
    show_text: Annotated[
        bool, typer.Option("--show-text", help="Print each hit's title, text (see --snippet) and metadata.")
    ] = False,
    snippet: Annotated[
        int, typer.Option("--snippet", help="Characters of text shown per hit with --show-text or --json (0: all).")
    ] = 200,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "auto",
    url: Annotated[
        str | None,
        typer.Option("--url", help="Search a running `mbret serve` at this address; DIR names the served index."),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="With --url: a file holding the service's API key.")
    ] = None,
    fuse: FuseOpt = None,
    fusion: FusionOpt = "rrf",
    alpha: AlphaOpt = 0.5,
    fusion_depth: FusionDepthOpt = 100,
) -> None:
    """Search an index with the model it was built with, optionally among the documents a metadata
    condition (--where) or an id list (--ids) selects; with --url, the same search through a running
    `mbret serve`; with --fuse, several indexes of one corpus, their rankings fused.

    Examples: mbret search runs/scifact-mini "vitamin D and bone density" -k 5 --show-text;
    mbret search idx "parsing" --where "year >= ? AND venue IN (?, ?)" --param 2020 --param ACL --param EMNLP;
    mbret search --url http://127.0.0.1:8000 scifact-mini "vitamin D" -k 5;
    mbret search --fuse runs/bm25,runs/colbert "vitamin D and bone density" (DIR is then the first query)
    """
    from mbret.indexes.filters import parse_param

    _check_fusion_options(fuse, fusion, alpha, fusion_depth)
    if fuse is not None:  # no DIR: every positional argument is a query
        queries = [index_dir, *(queries or [])]
    elif not queries:
        raise MbretError("give one or more queries after DIR")
    assert queries is not None

    if snippet < 0:
        raise MbretError(f"--snippet {snippet}: must be 0 (all) or a positive number of characters")
    params = [parse_param(p) for p in param or []]
    if params and where is None:
        raise MbretError("--param gives values for the ? of --where; add --where")
    chosen = _read_ids(ids) if ids is not None else None
    if url is not None:
        from mbret.client import Client

        local_only = {"--query-expansion": query_expansion, "--query-length": query_length, "--device": device}
        given = [flag for flag, value in local_only.items() if value is not None]
        if given or dtype != "auto":
            raise MbretError(f"{', '.join(given or ['--dtype'])}: set by the service, not with --url")
        from mbret.serve.config import read_api_key

        key = read_api_key(api_key_file) if api_key_file is not None else None
        if fuse is not None:
            raise MbretError("--fuse searches local indexes, not --url")
        results = Client(url, api_key=key).search(
            str(index_dir), queries, k=k, where=where, params=params, ids=chosen,
            return_documents=show_text or as_json, n_ivf_probe=n_ivf_probe,
            centroid_score_threshold=centroid_score_threshold, n_candidates=n_candidates, n_full_scores=n_full_scores,
        )  # fmt: skip
    else:
        from mbret.retrieval import Retriever

        if api_key_file is not None:
            raise MbretError("--api-key-file goes with --url")
        retriever: Any
        if fuse is not None:
            from mbret.retrieval.fusion import FusedRetriever

            if query_expansion is not None or query_length is not None:
                raise MbretError("--query-expansion/--query-length: each fused index encodes as it was built")
            retriever = FusedRetriever.load(
                _fused_dirs(fuse), fusion=fusion, alpha=alpha, fusion_depth=fusion_depth, device=device, dtype=dtype
            )
        else:
            retriever = Retriever.load(
                index_dir, device=device, dtype=dtype, query_expansion=query_expansion, query_length=query_length
            )
        retriever.configure_search(
            PlaidSearchParams(n_ivf_probe, centroid_score_threshold, n_candidates, n_full_scores)
        )
        if chosen is not None:
            first = retriever.retrievers[0] if fuse is not None else retriever
            unknown = sum(1 for d in chosen if d not in first.index)
            if unknown:
                typer.echo(f"note: {unknown} of {len(chosen)} ids in {ids} are not in the index", err=True)
        note = retriever.cut_queries_note(queries)
        if note:
            typer.echo(f"note: {note}", err=True)
        results = retriever.search(
            queries, k=k, where=where, params=params, ids=chosen, return_documents=show_text or as_json
        )

    def cut(text: str | None) -> str | None:
        return text if text is None or not snippet or len(text) <= snippet else text[:snippet].rstrip() + "…"

    if as_json:
        payload = [
            {
                "query": q,
                "hits": [
                    {
                        "rank": r,
                        "doc_id": h.doc_id,
                        "score": round(h.score, 6),
                        "title": h.title,
                        "text": cut(h.text),
                        "metadata": h.metadata,
                    }
                    for r, h in enumerate(hits, 1)
                ],
            }
            for q, hits in zip(queries, results)
        ]
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    for query, hits in zip(queries, results):
        typer.echo(f"query: {query}")
        for rank, hit in enumerate(hits, 1):
            typer.echo(f"  {rank:>3}  {hit.score:8.4f}  {hit.doc_id}")
            if show_text:
                if hit.title:
                    typer.echo(f"       {hit.title}")
                if hit.text:
                    typer.echo(f"       {cut(hit.text)}")
                if hit.metadata:
                    typer.echo(f"       {json.dumps(hit.metadata, ensure_ascii=False, sort_keys=True)}")


def _read_ids(path: Path) -> list[str]:
    """--ids FILE: one doc id per line (blank lines skipped); an empty file is an error."""
    from mbret.data.datasets import iter_lines

    if not path.is_file():
        raise MbretError(f"--ids {path}: file not found")
    chosen = [line.strip() for _, line in iter_lines(path) if line.strip()]
    if not chosen:
        raise MbretError(f"--ids {path}: no doc ids in the file (one per line)")
    return chosen


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
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise MbretError("mbret serve needs the serve extra: pip install 'mbret[serve]'") from None
    from mbret.indexes.base import read_manifest
    from mbret.serve.config import ServeConfig, read_api_key

    names: dict[str, Path] = {}
    for path in index_dirs:
        read_manifest(path)  # a missing or broken index fails here, before anything starts
        name = path.absolute().name
        if name in names:
            raise MbretError(f"{path}: {names[name]} is already served as {name!r}; give each a distinct name")
        names[name] = path
    for flag, value in (("--workers", workers), ("--max-k", max_k), ("--max-pending-writes", max_pending_writes)):
        if value < 1:
            raise MbretError(f"{flag} {value}: must be at least 1")
    if batch_window_ms < 0 or max_body_mb <= 0:
        raise MbretError("--batch-window-ms must be >= 0 and --max-body-mb > 0")
    if api_key_file is not None:
        read_api_key(api_key_file)
    config = ServeConfig(
        indexes=tuple(str(p) for p in index_dirs), device=device,
        api_key_file=str(api_key_file) if api_key_file else None, read_only=read_only, max_k=max_k,
        max_body_bytes=int(max_body_mb * 1024 * 1024), max_pending_writes=max_pending_writes,
        batch_window_ms=batch_window_ms,
    )  # fmt: skip
    options = {"host": host, "port": port, "access_log": access_log, "timeout_graceful_shutdown": 60}
    typer.echo(f"serving {', '.join(names)} at http://{host}:{port} (docs: /docs, search page: /)", err=True)
    if workers == 1:
        from mbret.serve.app import create_app

        uvicorn.run(create_app(config), **options)
    else:
        os.environ["MBRET_SERVE_CONFIG"] = config.to_json()
        uvicorn.run("mbret.serve.app:app_from_environment", factory=True, workers=workers, **options)


@app.command()
def info(
    index_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Index directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Describe an index: manifest, live and deleted documents, token vectors, bytes on disk by part,
    metadata fields with their types and counts, and the generation.

    Example: mbret info runs/scifact-mini --json
    """
    from mbret.indexes.info import format_info, index_info

    facts = index_info(index_dir)
    typer.echo(json.dumps(facts, ensure_ascii=False, indent=2) if as_json else format_info(facts))


@app.command()
def delete(
    index_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Index directory.")],
    doc_ids: Annotated[list[str], typer.Argument(metavar="DOC_ID...", help="Doc ids to delete.")],
) -> None:
    """Delete documents by id; every other document keeps its id."""
    from mbret.indexes import load_index

    with index_lock(index_dir):  # held from load to save, so concurrent deletes all persist
        index, manifest = load_index(index_dir)
        removed = index.delete(doc_ids)
        index.save(index_dir, manifest)
    typer.echo(f"deleted {removed} documents from {index_dir} ({len(index)} left)")


@app.command()
def compact(index_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Index directory.")]) -> None:
    """Free the space of deleted documents (plaid, exact, bm25); doc ids keep their meaning."""
    from mbret.indexes import load_index

    with index_lock(index_dir):
        index, manifest = load_index(index_dir)
        if not hasattr(index, "compact"):
            raise MbretError(f"{index_dir}: FAISS indexes drop vectors on delete; there is nothing to compact")
        freed = index.compact()
        index.save(index_dir, manifest, replace=True)
    what = "deleted documents' slots dropped" if manifest.kind == "bm25" else "token vectors freed"
    typer.echo(f"compacted {index_dir}: {freed} {what}, {len(index)} documents")


@app.command(name="rerank")
def rerank_command(
    run: Annotated[
        Path | None,
        typer.Argument(metavar="[RUN.trec]", help="First-stage TREC run to rerank (or --first-stage DIR instead)."),
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="BEIR directory (or irds:/hf: id) with the run's queries and documents; its qrels score both stages.",
        ),
    ] = "",
    model: ModelOpt = None,
    mode: Annotated[
        str, typer.Option("--mode", help="colbert (exact MaxSim, default), dense (cosine) or cross-encoder.")
    ] = "colbert",
    depth: Annotated[int, typer.Option("--depth", help="Hits per query reranked; the rest are dropped.")] = 100,
    first_stage: Annotated[
        Path | None,
        typer.Option("--first-stage", help="An mbret index to take each query's top --depth from, instead of RUN."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Reranked TREC run to write.")] = None,
    split: Annotated[str, typer.Option("--split", help="qrels split.")] = "test",
    metrics: Annotated[
        str, typer.Option("--metrics", help="Comma-separated NAME@K (ndcg, recall, precision, map, mrr).")
    ] = "ndcg@10,recall@100,mrr@10",
    keep_identical_ids: Annotated[
        bool,
        typer.Option("--keep-identical-ids", help="--first-stage: keep hits whose doc id equals the query id."),
    ] = False,
    max_length: MaxLenOpt = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "auto",
) -> None:
    """Rescore each query's top --depth hits of a first stage with another model (no index needed) and
    write the reranked run; prints both stages' metrics.

    Example: mbret rerank runs/bm25-eval/run.trec --data ../shared/data/beir/scifact --model minilm
    --mode colbert --out runs/bm25-colbert.trec (or --first-stage runs/bm25 instead of the run file)
    """
    from mbret.data.datasets import load_dataset
    from mbret.data.runs import read_trec_run
    from mbret.eval.metrics import drop_identical_ids, evaluate_run, parse_metric
    from mbret.eval.runner import EvalResult, format_table, rerank_run, write_trec_run
    from mbret.retrieval.rerank import RERANK_MODES, Reranker

    if not data:
        raise MbretError("--data is required: the BEIR directory (or irds:/hf: id) of the run's queries and documents")
    if model is None:
        raise MbretError("--model is required: the model that rescores the candidates (e.g. --model minilm)")
    if out is None:
        raise MbretError("--out is required: the reranked TREC run to write")
    if mode not in RERANK_MODES:
        raise MbretError(f"--mode {mode}: a reranker is one of {', '.join(RERANK_MODES)}")
    if depth <= 0:
        raise MbretError(f"--depth {depth}: must be a positive integer")
    if (run is None) == (first_stage is None):
        raise MbretError("give a first stage: a TREC run file RUN or --first-stage DIR (one of them)")
    if run is not None and keep_identical_ids:
        raise MbretError("--keep-identical-ids applies to --first-stage; a run file is reranked as it is")
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metric_names:
        parse_metric(name)
    dataset = load_dataset(data, split=split)
    if run is not None:
        first = read_trec_run(run)
        for qid, hits in first.items():
            if qid not in dataset.queries:
                raise MbretError(f"{run}: query {qid!r} is not among the {split} queries of {data}")
            missing = next((d for d, _ in hits if d not in dataset.corpus), None)
            if missing is not None:
                raise MbretError(f"{run}: doc {missing!r} (query {qid!r}) is not in the corpus of {data}")
        label = Path(run).name
    else:
        from mbret.retrieval import Retriever

        retriever = Retriever.load(first_stage, device=device, dtype=dtype, batch_size=batch_size)  # type: ignore[arg-type]
        qids = list(dataset.queries)
        found = retriever.search([dataset.queries[q] for q in qids], k=depth + (0 if keep_identical_ids else 1))
        scored = {q: {h.doc_id: h.score for h in row} for q, row in zip(qids, found)}
        if not keep_identical_ids:
            scored = drop_identical_ids(scored)
        first = {q: sorted(docs.items(), key=lambda it: (-it[1], it[0]))[:depth] for q, docs in scored.items()}
        label = str(first_stage)
    reranker = Reranker.load(model, mode, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length)
    reranked = rerank_run(dataset, first, reranker, depth)
    with atomic_file(out) as fh:
        write_trec_run(fh, reranked, "mbret-rerank")
    results = []
    for name, ranking in ((label, {q: dict(hits[:depth]) for q, hits in first.items()}), (reranker.name, reranked)):
        means, _ = evaluate_run(dataset.qrels, ranking, metric_names)
        results.append(EvalResult(dataset.name, dataset.split, name, mode, means, len(first), len(dataset.corpus), {}))
    typer.echo(format_table(*results))
    typer.echo(f"reranked the top {depth} of {len(first)} queries with {reranker.name} ({mode}); wrote {out}")


@app.command(name="eval")
def eval_command(
    data: Annotated[
        str | None,
        typer.Argument(
            metavar="[DATA]",
            help="BEIR directory, irds:<id> (e.g. irds:beir/scifact/test) or hf:<owner/name>; omit with --suite.",
        ),
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option(
            "--suite",
            help="Score a whole suite instead of DATA: beir, beir-dev4, mldr, codesearchnet, stackqa, paper, "
            "or a suite YAML file of local directories. Prints the paper's Table 1 numbers beside ours.",
        ),
    ] = None,
    paper_model: Annotated[
        str | None,
        typer.Option(
            "--paper-model",
            help="--suite: the paper row to compare with (modernbert-base, modernbert-large, bert-base); "
            "default: guessed from the model name.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="--suite: local BEIR directories named as the registry (DIR/scifact, ...)."),
    ] = None,
    save_index: Annotated[
        bool, typer.Option("--save-index", help="--suite: keep each dataset's index in OUTPUT/<dataset>/index.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="--suite: reuse datasets already scored in OUTPUT by the same weights.")
    ] = False,
    model: ModelOpt = None,
    mode: ModeOpt = "dense",
    index_dir: Annotated[
        Path | None, typer.Option("--index", help="Evaluate an existing index instead of building one.")
    ] = None,
    index_type: IndexTypeOpt = None,
    split: Annotated[str, typer.Option("--split", help="qrels split.")] = "test",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for results.json and run.trec.")
    ] = None,
    metrics: Annotated[
        str, typer.Option("--metrics", help="Comma-separated NAME@K (ndcg, recall, precision, map, mrr).")
    ] = "ndcg@10,recall@100,mrr@10",
    keep_identical_ids: Annotated[
        bool, typer.Option("--keep-identical-ids", help="Keep hits whose doc id equals the query id (BEIR drops them).")
    ] = False,
    max_length: MaxLenOpt = None,
    query_length: QueryLenOpt = None,
    query_expansion: QueryExpansionOpt = None,
    document_length: DocLenOpt = None,
    pool_factor: PoolFactorOpt = None,
    nbits: NbitsOpt = 2,
    n_ivf_probe: ProbeOpt = None,
    centroid_score_threshold: ThresholdOpt = None,
    n_candidates: CandidatesOpt = None,
    n_full_scores: FullScoresOpt = None,
    where: WhereOpt = None,
    param: ParamOpt = None,
    ids: IdsOpt = None,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "auto",
    fuse: FuseOpt = None,
    fusion: FusionOpt = "rrf",
    alpha: AlphaOpt = 0.5,
    fusion_depth: FusionDepthOpt = 100,
    rerank_model: Annotated[
        str | None,
        typer.Option(
            "--rerank",
            metavar="MODEL[:MODE]",
            help="Rerank the first stage's top --rerank-depth with MODEL as colbert (default: exact MaxSim), dense "
            "or cross-encoder (e.g. --rerank minilm:colbert); both stages' metrics are printed.",
        ),
    ] = None,
    rerank_depth: Annotated[int, typer.Option("--rerank-depth", help="With --rerank: hits per query reranked.")] = 100,
    index_param: Annotated[
        list[str] | None,
        typer.Option(
            "--index-param",
            help="KEY=VALUE for the index built (hnsw: M, ef_search; ivfpq: nlist, nprobe; bm25: method, k1, b, "
            "delta, stemmer, stopwords).",
        ),
    ] = None,
) -> None:
    """Score a model on a dataset (NDCG@10, Recall@100, MRR@10 by default) and print a table; --where and
    --ids restrict the run to the documents they select (the qrels stay whole); --fuse scores several
    indexes of the dataset's corpus fused into one ranking.

    Example: mbret eval ../shared/data/beir/scifact --model minilm --output runs/scifact-minilm

    Suites: mbret eval --suite beir-dev4 --model M --mode colbert --output runs/dev4 (conventions per
    dataset from the registry, the paper's numbers beside ours; `mbret report runs/dev4` charts it).
    """
    from mbret.data.datasets import load_dataset
    from mbret.eval.metrics import parse_metric
    from mbret.eval.runner import evaluate, format_table
    from mbret.retrieval import Retriever
    from mbret.retrieval.retriever import check_mode

    if index_dir is None and fuse is None:
        index_type = check_mode(mode, index_type)
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metric_names:
        parse_metric(name)
    search_params = PlaidSearchParams(n_ivf_probe, centroid_score_threshold, n_candidates, n_full_scores)
    from mbret.indexes.filters import parse_param

    params = [parse_param(p) for p in param or []]
    if params and where is None:
        raise MbretError("--param gives values for the ? of --where; add --where")
    if rerank_depth <= 0:
        raise MbretError(f"--rerank-depth {rerank_depth}: must be a positive integer")
    if index_param and (index_dir is not None or fuse is not None or suite is not None):
        raise MbretError("--index-param sets up the index eval builds; not with --index, --fuse or --suite")
    _check_fusion_options(fuse, fusion, alpha, fusion_depth)
    if rerank_model is None and rerank_depth != 100:
        raise MbretError("--rerank-depth applies with --rerank MODEL[:MODE]")
    if pool_factor is not None and (index_dir is not None or fuse is not None or suite is not None):
        raise MbretError("--pool-factor sets up the index eval builds; not with --index, --fuse or --suite")
    if fuse is not None:
        built_only = {"--index-type": index_type, "--query-length": query_length, "--query-expansion": query_expansion,
                      "--document-length": document_length, "--max-length": max_length}  # fmt: skip
        given = [flag for flag, value in built_only.items() if value is not None]
        if given:
            raise MbretError(f"{', '.join(given)}: each index in --fuse is searched as it was built")
    chosen = _read_ids(ids) if ids is not None else None
    if suite is not None:
        if rerank_model is not None or fuse is not None:
            raise MbretError("--rerank and --fuse apply to one dataset, not a --suite")
        if mode == "bm25":
            raise MbretError("--suite scores a model; score BM25 per dataset with mbret eval DATA --mode bm25")
        if where is not None or chosen is not None:
            raise MbretError("--where and --ids apply to one dataset, not a --suite")
        if data is not None or index_dir is not None:
            raise MbretError("--suite takes no DATA and no --index: it builds an index per dataset")
        if model is None:
            raise MbretError("--suite needs --model")
        if keep_identical_ids or split != "test":
            raise MbretError(
                "--suite takes split and identical-id policy per dataset from the registry; "
                "set `split:` or `ignore_identical_ids:` in a suite YAML instead"
            )
        _eval_suite(
            suite,
            model=model,
            mode=mode,
            index_type=index_type,
            index_params=_index_params(index_type or "", None, nbits, None, None, None, None),
            search_params=search_params,
            metrics=tuple(metric_names),
            output=output,
            paper_model=paper_model,
            data_dir=data_dir,
            save_index=save_index,
            resume=resume,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            max_length=max_length,
            query_length=query_length,
            document_length=document_length,
            query_expansion=query_expansion,
        )
        return
    if data is None:
        raise MbretError("give DATA (a BEIR directory or dataset id) or --suite NAME")
    dataset = load_dataset(data, split=split)
    retriever: Any = None
    if fuse is not None:
        from mbret.retrieval.fusion import FusedRetriever

        if index_dir is not None or model is not None:
            raise MbretError("--fuse names the indexes to score; it takes no --index or --model")
        retriever = FusedRetriever.load(
            _fused_dirs(fuse), fusion=fusion, alpha=alpha, fusion_depth=fusion_depth, device=device, dtype=dtype
        )
        for path, part in zip(retriever.paths, retriever.retrievers):
            missing = next((d for judged in dataset.qrels.values() for d in judged if d not in part.index), None)
            if missing is not None:
                raise MbretError(f"{path}: lacks doc {missing!r} of {data}; index the same corpus")
    elif index_dir is not None:
        retriever = Retriever.load(
            index_dir,
            model=model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            query_expansion=query_expansion,
            query_length=query_length,
        )
        missing = next((d for judged in dataset.qrels.values() for d in judged if d not in retriever.index), None)
        if missing is not None:
            raise MbretError(f"{index_dir}: lacks doc {missing!r} of {data}; index the same corpus")
    elif model is None and mode != "bm25":
        raise MbretError("--model is required unless --index names an existing index")
    result = evaluate(
        dataset,
        retriever,
        model=model,
        mode=mode,
        index_type=index_type,
        query_length=query_length,
        document_length=document_length,
        query_expansion=query_expansion,
        pool_factor=pool_factor,
        index_params=_index_params(index_type or "", index_param, nbits, None, None, None, None),
        search_params=search_params,
        metrics=metric_names,
        ignore_identical_ids=not keep_identical_ids,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        dtype=dtype,
        where=where,
        params=params,
        ids=chosen,
        k=max(rerank_depth, 100, *(parse_metric(m)[1] for m in metric_names)) if rerank_model else None,
    )
    stages = [result]
    if rerank_model is not None:
        from mbret.eval.runner import rerank_result
        from mbret.retrieval.rerank import Reranker, split_model_mode

        name, rerank_mode = split_model_mode(rerank_model)
        reranker = Reranker.load(name, rerank_mode, device=device, dtype=dtype, batch_size=batch_size)
        result = rerank_result(dataset, result, reranker, rerank_depth, metric_names)
        stages.append(result)
    if output is not None:
        result.save(output)
    if result.settings.get("queries_cut_note"):
        typer.echo(f"note: {result.settings['queries_cut_note']}", err=True)
    typer.echo(format_table(*stages))
    typer.echo(
        f"{result.num_queries} queries, {result.num_docs} docs, {result.timings['total_s']:.1f}s"
        + (f"; wrote {output}/results.json and run.trec" if output else "")
    )


def _eval_suite(suite: str, output: Path | None, **settings: object) -> None:
    from mbret.eval.registry import resolve_suite
    from mbret.eval.suite import SuiteOptions, check_output, format_comparison, run_suite

    output = check_output(output)
    resolved = resolve_suite(suite)
    options = SuiteOptions(**settings)  # type: ignore[arg-type]
    typer.echo(f"suite {resolved.name}: {', '.join(s.name for s in resolved.datasets)}")
    summary = run_suite(resolved, options, output, echo=lambda line: typer.echo(line, err=True))
    typer.echo(format_comparison(summary))
    typer.echo(f"{summary['timings']['total_s']:.1f}s; wrote {output}/results.json (and one directory per dataset)")


@app.command()
def report(
    results: Annotated[
        list[Path], typer.Argument(metavar="RESULTS_DIR...", help="Directories written by `mbret eval --output`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where report.md and report.png go.")] = Path("report"),
) -> None:
    """Compare runs: a markdown table (printed and saved) and a bar chart PNG of NDCG@10, paper numbers beside.

    Example: mbret report runs/dense-scifact runs/colbert-scifact --out runs/report
    """
    from mbret.eval.report import write_report

    md, png, table = write_report(list(results), out)
    typer.echo(table)
    typer.echo(f"wrote {md} and {png}")


# -- training ---------------------------------------------------------------------------------------------
@app.command()
def train(
    mode: Annotated[str | None, typer.Option("--mode", help="dense or colbert (default dense).")] = None,
    model: ModelOpt = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Training data: triplets or FlagEmbedding JSONL/Parquet, a train/queries/documents directory, "
            "a BEIR directory (train qrels), or hf:ID[:CONFIG].",
        ),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Run directory (checkpoints, final/).")] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="paper-dpr-base, paper-dpr-large, paper-colbert-base, paper-colbert-large."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of settings (flags win).")] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            "--loss",
            help="dense: cmnrl (default), mnrl, kl, margin-mse; colbert: kl (default), "
            "contrastive, cached-contrastive, margin-mse.",
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default 5e-5).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Examples per step per device.")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", help="Steps per optimizer update.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Passes over the data (default 1).")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after N steps (overrides --epochs).")
    ] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Use the first N examples only.")] = None,
    max_length: MaxLenOpt = None,
    query_length: QueryLenOpt = None,
    query_expansion: QueryExpansionOpt = None,
    document_length: DocLenOpt = None,
    n_ways: Annotated[int | None, typer.Option("--n-ways", help="Documents per query for id-based KD data.")] = None,
    num_negatives: Annotated[int | None, typer.Option("--num-negatives", help="Hard negatives per example.")] = None,
    mini_batch_size: Annotated[
        int | None, typer.Option("--mini-batch-size", help="Cached losses: texts per forward.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Distillation temperature.")] = None,
    teacher_temperature: Annotated[
        float | None,
        typer.Option("--teacher-temperature", help="Teacher-side temperature (match the teacher's score spread)."),
    ] = None,
    warmup_ratio: Annotated[
        float | None, typer.Option("--warmup-ratio", help="Warmup fraction (default 0.05).")
    ] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast (GPU).")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory."),
    ] = None,
    gather_across_devices: Annotated[
        bool | None,
        typer.Option(
            "--gather-across-devices/--no-gather-across-devices", help="DDP: share in-batch negatives across devices."
        ),
    ] = None,
    save_steps: Annotated[
        int | None, typer.Option("--save-steps", help="Checkpoint every N steps (default 500).")
    ] = None,
    eval_data: Annotated[
        str | None, typer.Option("--eval-data", help="BEIR directory evaluated during training.")
    ] = None,
    eval_steps: Annotated[
        int | None, typer.Option("--eval-steps", help="Evaluate every N steps (default: save steps).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed for data order and a new ColBERT projection.")
    ] = None,
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUTPUT.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved settings and exit.")] = False,
) -> None:
    """Fine-tune a dense or ColBERT retriever (contrastive or distillation), e.g.

    mbret train --mode dense --model minilm --data mined.jsonl --output runs/dense --max-steps 300

    mbret train --preset paper-colbert-base --dry-run
    """
    from mbret.training.config import describe, resolve_config

    flags = {
        "mode": mode,
        "model": model,
        "data": data,
        "output": output,
        "loss": loss,
        "lr": lr,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "epochs": epochs,
        "max_steps": max_steps,
        "max_samples": max_samples,
        "max_length": max_length,
        "query_length": query_length,
        "query_expansion": query_expansion,
        "document_length": document_length,
        "n_ways": n_ways,
        "num_negatives": num_negatives,
        "mini_batch_size": mini_batch_size,
        "temperature": temperature,
        "teacher_temperature": teacher_temperature,
        "warmup_ratio": warmup_ratio,
        "bf16": bf16,
        "gradient_checkpointing": gradient_checkpointing,
        "gather_across_devices": gather_across_devices,
        "save_steps": save_steps,
        "eval_data": eval_data,
        "eval_steps": eval_steps,
        "seed": seed,
        "device": device,
        "resume": resume or None,
    }
    settings = resolve_config(preset, config, flags)
    if dry_run:
        settings.validate(require_paths=False)
        typer.echo(describe(settings))
        return
    from mbret.training.trainer import train as run_training

    result = run_training(settings)
    typer.echo(
        f"trained {result.steps} steps in {result.seconds:.1f}s ({result.samples_per_second:.2f} samples/s); "
        f"model saved to {result.output}"
    )


@app.command()
def mine(
    data: Annotated[
        str, typer.Argument(help="BEIR directory (or irds:/hf: id) whose qrels give (query, positive) pairs.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    model: ModelOpt = None,
    split: Annotated[str, typer.Option("--split", help="qrels split with the positives.")] = "train",
    num_negatives: Annotated[int, typer.Option("--num-negatives", help="Negatives per pair.")] = 8,
    range_min: Annotated[int, typer.Option("--range-min", help="Skip the top N non-positive candidates.")] = 0,
    range_max: Annotated[int, typer.Option("--range-max", help="Look no deeper than rank N.")] = 100,
    margin: Annotated[
        float | None, typer.Option("--margin", help="Keep negatives scoring below the positive minus this.")
    ] = None,
    relative_margin: Annotated[
        float, typer.Option("--relative-margin", help="Keep negatives scoring below positive x (1 - this).")
    ] = 0.05,
    fmt: Annotated[
        str, typer.Option("--format", help="flag (query/pos/neg) or triplets (query/positive/negative_N).")
    ] = "flag",
    cache: Annotated[Path | None, typer.Option("--cache", help="Corpus-embedding cache (resume a killed run).")] = None,
    batch_size: BatchOpt = 64,
    max_length: MaxLenOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Mine hard negatives for qrels pairs with a dense model, e.g.

    mbret mine ../shared/data/beir/scifact --model minilm --out mined.jsonl
    """
    from mbret.data.datasets import load_dataset
    from mbret.retrieval.dense import DenseEncoder
    from mbret.training.mining import MiningParams, mine_hard_negatives, write_mined

    if model is None:
        raise MbretError("--model is required")
    dataset = load_dataset(data, split=split)
    pairs = [(q, d) for q, judged in dataset.qrels.items() for d, grade in judged.items() if grade > 0]
    if not pairs:
        raise MbretError(f"{data}: no positive judgements in the {split} qrels")
    encoder = DenseEncoder.load(model, device=device, max_length=max_length)
    params = MiningParams(num_negatives, range_min, range_max, margin, relative_margin)
    cache_dir = cache if cache is not None else out.with_name(out.name + ".cache")
    examples, report = mine_hard_negatives(
        dataset.queries, pairs, dataset.corpus, encoder, params, cache_dir=cache_dir, batch_size=batch_size
    )
    if not examples:
        raise MbretError(
            f"no pair kept {num_negatives} negatives under these filters; widen --range-max or the margins"
        )
    write_mined(examples, out, fmt)
    typer.echo(
        f"mined {report.kept} of {report.pairs} pairs ({report.dropped} dropped: too few negatives passed the "
        f"filters); positives ranked {report.mean_positive_rank:.1f} on average; wrote {out}"
    )


@app.command()
def score(
    data: Annotated[str, typer.Argument(help="Triplets or FlagEmbedding JSONL/Parquet to score.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File (--format flag) or directory (--format ids).")],
    teacher: Annotated[
        str, typer.Option("--teacher", help="CrossEncoder hub id or dir, or dense:MODEL (e.g. dense:minilm).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="flag (JSONL with pos/neg scores) or ids (train/queries/documents).")
    ] = "flag",
    batch_size: BatchOpt = 64,
    device: DeviceOpt = None,
) -> None:
    """Add teacher scores for distillation, e.g.  mbret score mined.jsonl --teacher dense:minilm --out scored.jsonl"""
    from mbret.training.scoring import Teacher, score_training_file

    rows = score_training_file(data, Teacher.load(teacher, device=device), out, fmt=fmt, batch_size=batch_size)
    typer.echo(f"scored {rows} rows with {teacher}; wrote {out}")


def _show_warning(shown):  # noqa: ANN001, ANN202 - wraps warnings.showwarning, whatever its signature
    """mbret's own warnings as one `warning: ...` line on stderr (as errors are); others as Python shows them."""

    def show(message, category, *rest, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if issubclass(category, MbretWarning):
            typer.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, *rest, **kwargs)

    return show


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user errors become one line on stderr and code 2."""
    import click

    _quiet_libraries()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", MbretWarning)
            warnings.showwarning = _show_warning(warnings.showwarning)
            app(args=argv, prog_name="mbret", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 1
    except MbretError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, every rank fails with the same error
            typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return 0


def main() -> None:
    """Console entry point (`mbret`)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
