"""`mbret train`, `mine` and `score`: fine-tuning retrievers and preparing their data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mbret.cli.app import app
from mbret.cli.options import LENGTHS, BatchOpt, DeviceOpt, DocLenOpt, ModelOpt, output_option, with_options


@app.command()
@with_options(LENGTHS)
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
    output: output_option("Run directory (checkpoints, final/).") = None,
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
    **lengths: object,
) -> None:
    """Fine-tune a dense or ColBERT retriever (contrastive or distillation), e.g.

    mbret train --mode dense --model minilm --data mined.jsonl --output runs/dense --max-steps 300

    mbret train --preset paper-colbert-base --dry-run
    """
    # every flag but these three is a TrainConfig field of the same name (None: not given)
    flags = {name: value for name, value in locals().items() if name not in ("preset", "config", "dry_run", "lengths")}
    from mbret.training.config import describe, resolve_config

    settings = resolve_config(
        preset, config, {**flags, **lengths, "output": output and str(output), "resume": resume or None}
    )
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
    output: output_option("JSONL file to write.", required=True),
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
    document_length: DocLenOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Mine hard negatives for qrels pairs with a dense model, e.g.

    mbret mine ../shared/data/beir/scifact --model minilm --output mined.jsonl
    """
    given = dict(locals())  # every flag, by the name mine_dataset takes it: the list is written once, above
    from mbret.training.negatives import mine_dataset

    report = mine_dataset(**given)
    typer.echo(
        f"mined {report.kept} of {report.pairs} pairs ({report.dropped} dropped: too few negatives passed the "
        f"filters); positives ranked {report.mean_positive_rank:.1f} on average; wrote {output}"
    )


@app.command()
def score(
    data: Annotated[str, typer.Argument(help="Triplets or FlagEmbedding JSONL/Parquet to score.")],
    output: output_option("File (--format flag) or directory (--format ids).", required=True),
    teacher: Annotated[
        str, typer.Option("--teacher", help="CrossEncoder hub id or dir, or dense:MODEL (e.g. dense:minilm).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="flag (JSONL with pos/neg scores) or ids (train/queries/documents).")
    ] = "flag",
    batch_size: BatchOpt = 64,
    device: DeviceOpt = None,
) -> None:
    """Add teacher scores for distillation, e.g. mbret score mined.jsonl --teacher dense:minilm --output scored.jsonl"""
    from mbret.training.scoring import Teacher, score_training_file

    rows = score_training_file(data, Teacher.load(teacher, device=device), output, fmt=fmt, batch_size=batch_size)
    typer.echo(f"scored {rows} rows with {teacher}; wrote {output}")
