"""`mbret index`, `delete`, `compact` and `info`: writing and describing index directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mbret.cli.app import app
from mbret.cli.options import (
    ENCODING,
    LENGTHS,
    SEARCH_SETTINGS,
    BatchOpt,
    IndexParamOpt,
    IndexTypeOpt,
    ModelOpt,
    ModeOpt,
    NbitsOpt,
    PoolFactorOpt,
    output_option,
    with_options,
)
from mbret.types import SearchParams

DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="Index directory.")]


@app.command()
@with_options(SEARCH_SETTINGS, into="search_params")
@with_options(ENCODING)
@with_options(LENGTHS)
def index(
    corpus: Annotated[str, typer.Argument(help="corpus.jsonl, a BEIR directory, or irds:/hf: id.")],
    output: output_option("Index directory to write.", required=True),
    model: ModelOpt = None,
    mode: ModeOpt = "dense",
    index_type: IndexTypeOpt = None,
    batch_size: BatchOpt = 64,
    pool_factor: PoolFactorOpt = None,
    nbits: NbitsOpt = 2,
    index_params: IndexParamOpt = None,
    query_prompt: Annotated[str | None, typer.Option(help="Text put before every query.")] = None,
    document_prompt: Annotated[str | None, typer.Option(help="Text put before every document.")] = None,
    add: Annotated[bool, typer.Option("--add", help="Add the corpus to the existing index at --output.")] = False,
    recluster: Annotated[
        bool,
        typer.Option(
            "--recluster",
            help="plaid, with --add: retrain centroids on the whole index afterwards (when the manifest's drift "
            "grows).",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index at --output.")] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Finish a sharded build (torchrun) that was killed: the shards its staging area (.OUTPUT.staging "
            "beside --output) holds already are not encoded again. Same corpus, model and index settings.",
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
    *,
    search_params: SearchParams,
    **encoding: object,
) -> None:
    """Encode a corpus and write a searchable index directory, with its documents' text and metadata
    (a corpus row's "metadata" object: strings, numbers, booleans, null) in a document store. The search
    flags (--n-ivf-probe ..., --nprobe, --ef-search) given here become the index's defaults.

    Example: mbret index examples/scifact-mini/corpus.jsonl --model minilm --output runs/scifact-mini

    On many GPUs or nodes, launch the same command under torchrun: each rank encodes its shard of the
    corpus and rank 0 commits one generation (--add too; --resume finishes a killed build):
    torchrun --nproc-per-node 8 -m mbret index corpus.jsonl --model M --mode colbert --output DIR
    """
    given = dict(locals())  # every flag, by the name index_corpus takes it: the list is written once, above
    from mbret.retrieval.indexing import index_corpus

    done = index_corpus(**{name: value for name, value in given.items() if name != "encoding"}, **encoding)  # type: ignore[arg-type]
    if not done.is_main:
        return
    if done.world_size > 1 or done.num_shards is not None:
        skipped = f"; {done.skipped_shards} of {done.num_shards} shards were written already" if resume else ""
        typer.echo(
            f"{'added' if add else 'indexed'} {done.num_docs} documents {'to' if add else 'into'} {output} "
            f"({done.index_type}) on {done.world_size} process{'es' if done.world_size > 1 else ''} in "
            f"{done.seconds:.1f}s{skipped}"
        )
    elif add:
        typer.echo(
            f"added {done.num_docs} documents to {output} ({done.total_docs} in all)"
            + (f"; drift {done.drift:+.3f}" if done.drift is not None else "")
            + ("; reclustered" if done.reclustered else "")
        )
    else:
        typer.echo(
            f"indexed {done.num_docs} documents into {output} ({done.index_type}, {done.shape}) in {done.seconds:.1f}s"
        )


@app.command()
def info(
    index_dir: DirArg,
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
    index_dir: DirArg,
    doc_ids: Annotated[list[str], typer.Argument(metavar="DOC_ID...", help="Doc ids to delete.")],
) -> None:
    """Delete documents by id; every other document keeps its id."""
    from mbret.retrieval.indexing import delete_documents

    removed, left = delete_documents(index_dir, doc_ids)
    typer.echo(f"deleted {removed} documents from {index_dir} ({left} left)")


@app.command()
def compact(index_dir: DirArg) -> None:
    """Free the space of deleted documents (plaid, exact, bm25); doc ids keep their meaning."""
    from mbret.retrieval.indexing import compact_index

    done = compact_index(index_dir)
    typer.echo(f"compacted {index_dir}: {done.freed} {done.unit}, {done.num_docs} documents")
