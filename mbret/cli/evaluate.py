"""`mbret eval` and `mbret report`: scoring datasets and suites, and comparing the results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mbret.cli.app import app
from mbret.cli.options import (
    ENCODING,
    FILTERS,
    FUSION,
    LENGTHS,
    SEARCH_SETTINGS,
    BatchOpt,
    IndexParamOpt,
    IndexTypeOpt,
    KeepIdenticalOpt,
    MetricsOpt,
    ModelOpt,
    ModeOpt,
    NbitsOpt,
    PoolFactorOpt,
    SplitOpt,
    output_option,
    with_options,
)
from mbret.types import SearchParams


@app.command(name="eval")
@with_options(SEARCH_SETTINGS, into="search_params")
@with_options(FUSION)
@with_options(ENCODING)
@with_options(FILTERS)
@with_options(LENGTHS)
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
    split: SplitOpt = "test",
    output: output_option("Directory for results.json and run.trec.") = None,
    metrics: MetricsOpt = "ndcg@10,recall@100,mrr@10",
    keep_identical_ids: KeepIdenticalOpt = False,
    pool_factor: PoolFactorOpt = None,
    nbits: NbitsOpt = 2,
    batch_size: BatchOpt = 64,
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
    index_params: IndexParamOpt = None,
    *,
    search_params: SearchParams,
    **options: object,
) -> None:
    """Score a model on a dataset (NDCG@10, Recall@100, MRR@10 by default) and print a table; --where and
    --ids restrict the run to the documents they select (the qrels stay whole); --fuse scores several
    indexes of the dataset's corpus fused into one ranking.

    Example: mbret eval ../shared/data/beir/scifact --model minilm --output runs/scifact-minilm

    Suites: mbret eval --suite beir-dev4 --model M --mode colbert --output runs/dev4 (conventions per
    dataset from the registry, the paper's numbers beside ours; `mbret report runs/dev4` charts it).
    """
    given = dict(locals())  # every flag, by the name run_evaluation takes it: the list is written once, above
    from mbret.eval.evaluation import run_evaluation
    from mbret.eval.runner import format_table

    del given["options"]
    done = run_evaluation(**given, **options, echo=lambda line: typer.echo(line, err=True))  # type: ignore[arg-type]
    if done.suite_summary is not None:
        from mbret.eval.suite import format_comparison

        typer.echo(format_comparison(done.suite_summary))
        typer.echo(
            f"{done.suite_summary['timings']['total_s']:.1f}s; wrote {done.output}/results.json "
            "(and one directory per dataset)"
        )
        return
    for note in done.notes:
        typer.echo(f"note: {note}", err=True)
    result = done.result
    typer.echo(format_table(*done.stages))
    typer.echo(
        f"{result.num_queries} queries, {result.num_docs} docs, {result.timings['total_s']:.1f}s"
        + (f"; wrote {output}/results.json and run.trec" if output else "")
    )


@app.command()
def report(
    results: Annotated[
        list[Path], typer.Argument(metavar="RESULTS_DIR...", help="Directories written by `mbret eval --output`.")
    ],
    output: output_option("Where report.md and report.png go.", required=True) = Path("report"),
) -> None:
    """Compare runs: a markdown table (printed and saved) and a bar chart PNG of NDCG@10, paper numbers beside.

    Example: mbret report runs/dense-scifact runs/colbert-scifact --output runs/report
    """
    from mbret.eval.report import write_report

    md, png, table = write_report(list(results), output)
    typer.echo(table)
    typer.echo(f"wrote {md} and {png}")
