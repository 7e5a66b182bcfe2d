"""`mbret rerank`: a first stage rescored by another model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mbret.cli.app import app
from mbret.cli.options import (
    ENCODING,
    BatchOpt,
    DocLenOpt,
    KeepIdenticalOpt,
    MetricsOpt,
    ModelOpt,
    SplitOpt,
    output_option,
    with_options,
)


@app.command(name="rerank")
@with_options(ENCODING)
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
    rerank_depth: Annotated[
        int, typer.Option("--rerank-depth", help="Hits per query reranked; the rest are dropped.")
    ] = 100,
    first_stage: Annotated[
        Path | None,
        typer.Option(
            "--first-stage", help="An mbret index to take each query's top --rerank-depth from, instead of RUN."
        ),
    ] = None,
    output: output_option("Reranked TREC run to write.") = None,
    split: SplitOpt = "test",
    metrics: MetricsOpt = "ndcg@10,recall@100,mrr@10",
    keep_identical_ids: KeepIdenticalOpt = False,
    document_length: DocLenOpt = None,
    batch_size: BatchOpt = 32,
    **encoding: object,
) -> None:
    """Rescore each query's top --rerank-depth hits of a first stage with another model (no index needed)
    and write the reranked run; prints both stages' metrics.

    Example: mbret rerank runs/bm25-eval/run.trec --data ../shared/data/beir/scifact --model minilm
    --mode colbert --output runs/bm25-colbert.trec (or --first-stage runs/bm25 instead of the run file)
    """
    given = dict(locals())  # every flag, by the name rerank_first_stage takes it: the list is written once, above
    from mbret.eval.reranking import rerank_first_stage
    from mbret.eval.runner import format_table

    del given["encoding"]
    done = rerank_first_stage(**given, **encoding)  # type: ignore[arg-type]
    typer.echo(format_table(*done.results))
    typer.echo(
        f"reranked the top {done.rerank_depth} of {done.num_queries} queries with {done.reranker} ({done.mode}); "
        f"wrote {done.output}"
    )
