"""Mining a dataset's hard negatives into a training file: its qrels' (query, positive) pairs, a dense model's
candidates, the filters, the file. What `mbret mine` does, as one call (`mine_dataset`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbret.errors import ParameterError


def mine_dataset(
    data: str,
    output: Path,
    *,
    model: str | None,
    split: str = "train",
    num_negatives: int = 8,
    range_min: int = 0,
    range_max: int = 100,
    margin: float | None = None,
    relative_margin: float = 0.05,
    fmt: str = "flag",
    cache: Path | None = None,
    batch_size: int = 64,
    document_length: int | None = None,
    device: str | None = None,
) -> Any:
    """Mine `num_negatives` hard negatives per positive pair of `data`'s `split` qrels with the dense `model`
    and write them to `output` as `fmt` (flag or triplets); returns the `MiningReport`. The corpus encoding
    is cached in `cache` (default: beside `output`) so a killed run resumes."""
    from mbret.data.datasets import load_dataset
    from mbret.retrieval.dense import DenseEncoder
    from mbret.training.mining import MiningParams, mine_hard_negatives, write_mined

    if model is None:
        raise ParameterError("model", "required: the dense model that finds the candidates (e.g. minilm)")
    dataset = load_dataset(data, split=split)
    pairs = [(q, d) for q, judged in dataset.qrels.items() for d, grade in judged.items() if grade > 0]
    if not pairs:
        raise ParameterError("data", f"{data}: no positive judgements in the {split} qrels")
    encoder = DenseEncoder.load(model, device=device, document_length=document_length)
    params = MiningParams(num_negatives, range_min, range_max, margin, relative_margin)
    cache_dir = cache if cache is not None else output.with_name(output.name + ".cache")
    examples, report = mine_hard_negatives(
        dataset.queries, pairs, dataset.corpus, encoder, params, cache_dir=cache_dir, batch_size=batch_size
    )
    if not examples:
        raise ParameterError(
            "num_negatives", f"{num_negatives}: no pair kept that many negatives under these filters; widen range_max"
        )
    write_mined(examples, output, fmt)
    return report
