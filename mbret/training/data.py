"""Training data in the four shapes IR datasets come in, made into one table the trainers read.

The table (a `datasets.Dataset`) has columns `query`, `positive`, `negative_1` ... `negative_n` and, when
teacher scores exist, `label`: a list of n + 1 scores, the positive's first. Sentence-transformers' losses
read the text columns positionally and the label column by name.

Shapes:
  (a) triplets: `query, positive, negative[, negative_2 ...]` rows (JSONL, Parquet, or a hub dataset such as
      `hf:sentence-transformers/msmarco-co-condenser-margin-mse-sym-mnrl-mean-v1:triplet-hard`);
  (b) id-based distillation: `train` rows `query_id, document_ids, scores` plus `queries` and `documents`
      tables (a directory with train/queries/documents .jsonl or .parquet, or `hf:lightonai/ms-marco-en-bge`),
      resolved lazily, `n_ways` documents per query;
  (c) FlagEmbedding JSONL: `query, pos, neg, pos_scores, neg_scores`;
  (d) a BEIR directory with a train qrels split: (query, positive) pairs; negatives come from `mbret mine`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbret.errors import InputError, MbretError, ParameterError

logger = logging.getLogger(__name__)

QUERY_KEYS = ("query", "anchor", "question")
POSITIVE_KEYS = ("positive", "pos", "document", "passage")
LABEL_KEYS = ("label", "labels", "scores", "score")


@dataclass
class TrainingData:
    """The training table and what it can feed: `has_scores` for distillation, `num_negatives` per row."""

    dataset: Any  # datasets.Dataset
    kind: str  # triplets | ids | flag | beir
    num_negatives: int
    has_scores: bool
    source: str

    def __len__(self) -> int:
        return len(self.dataset)


def detect_format(source: str) -> str:
    if source.startswith("hf:"):
        repo = source[3:].split(":")[0]
        return "ids" if repo.startswith("lightonai/ms-marco") else "triplets"
    path = Path(source)
    if path.is_dir():
        if (path / "qrels").is_dir():
            return "beir"
        if _table_file(path, "train") and _table_file(path, "queries") and _table_file(path, "documents"):
            return "ids"
        raise ParameterError(
            "data",
            f"{source}: a directory must be BEIR (corpus.jsonl, queries.jsonl, qrels/) or hold "
            "train/queries/documents tables (.jsonl or .parquet)",
        )
    if not path.is_file():
        raise ParameterError("data", f"{source}: no such file or directory")
    first = next(iter(_rows(path, limit=1)), None)
    if first is None:
        raise InputError(path, None, "no training rows")
    _, row = first
    if "pos" in row and "neg" in row:
        return "flag"
    return "triplets"


def load_training_data(
    source: str,
    n_ways: int = 32,
    num_negatives: int | None = None,
    max_samples: int | None = None,
    split: str = "train",
) -> TrainingData:
    """Read any of the four shapes (see the module docstring) into the common table."""
    kind = detect_format(source)
    if kind == "ids":
        data = _load_id_distillation(source, n_ways, max_samples)
    elif kind == "beir":
        data = _load_beir_pairs(source, split, max_samples)
    else:
        examples = _read_examples(source, kind, max_samples)
        data = _to_dataset(examples, kind, source, num_negatives)
    logger.info("training data %s: %d examples, %d negatives each", source, len(data), data.num_negatives)
    return data


# -- (a) and (c): row files -------------------------------------------------------------------------------
@dataclass
class Example:
    query: str
    positive: str
    negatives: list[str]
    scores: list[float] | None  # positive first
    where: tuple[Path | str, int | None]


def _read_examples(source: str, kind: str, max_samples: int | None) -> list[Example]:
    examples: list[Example] = []
    for where, row in _source_rows(source):
        if max_samples is not None and len(examples) >= max_samples:
            break
        examples.extend(_flag_examples(row, where) if kind == "flag" else [_triplet_example(row, where)])
    if not examples:
        raise ParameterError("data", f"{source}: no training rows")
    return examples[:max_samples] if max_samples is not None else examples


def _triplet_example(row: dict[str, Any], where: tuple[Path | str, int | None]) -> Example:
    query = _first_key(row, QUERY_KEYS)
    positive = _first_key(row, POSITIVE_KEYS)
    if query is None or positive is None:
        _bad(where, f"needs a query and a positive column; found {', '.join(row) or 'none'}")
    negatives = [row[k] for k in row if k.startswith(("negative", "neg")) and row[k] is not None]
    flat: list[Any] = []
    for value in negatives:
        flat.extend(value if isinstance(value, list) else [value])
    for name, value in (("query", query), ("positive", positive), *(("negative", n) for n in flat)):
        if not isinstance(value, str):
            _bad(where, f"{name} must be text, got {type(value).__name__}")
    scores = _first_key(row, LABEL_KEYS)
    if scores is not None:
        scores = _scores(scores, 1 + len(flat), where)
    return Example(query, positive, flat, scores, where)


def _flag_examples(row: dict[str, Any], where: tuple[Path | str, int | None]) -> list[Example]:
    query, pos, neg = row.get("query"), row.get("pos"), row.get("neg")
    if not isinstance(query, str):
        _bad(where, "`query` must be text")
    if not isinstance(pos, list) or not pos or not all(isinstance(p, str) for p in pos):
        _bad(where, "`pos` must be a non-empty list of texts")
    if not isinstance(neg, list) or not all(isinstance(n, str) for n in neg):
        _bad(where, "`neg` must be a list of texts")
    pos_scores, neg_scores = row.get("pos_scores"), row.get("neg_scores")
    if (pos_scores is None) != (neg_scores is None):
        _bad(where, "give both `pos_scores` and `neg_scores`, or neither")
    out = []
    for i, positive in enumerate(pos):
        scores = None
        if pos_scores is not None:
            p = _scores(pos_scores, len(pos), where, "pos_scores")
            n = _scores(neg_scores, len(neg), where, "neg_scores")
            scores = [p[i], *n]
        out.append(Example(query, positive, list(neg), scores, where))
    return out


def _scores(value: Any, expected: int, where: tuple[Path | str, int | None], name: str = "label") -> list[float]:
    if isinstance(value, (int, float)) and expected == 1:
        value = [value]
    if not isinstance(value, list) or len(value) != expected:
        _bad(where, f"`{name}` must be a list of {expected} numbers (one per document)")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        _bad(where, f"`{name}` must hold numbers")
    raise AssertionError  # unreachable


def _to_dataset(examples: list[Example], kind: str, source: str, num_negatives: int | None) -> TrainingData:
    from datasets import Dataset

    fewest = min(len(e.negatives) for e in examples)
    n = fewest if num_negatives is None else min(num_negatives, fewest)
    if num_negatives is not None and num_negatives > fewest:
        shortest = min(examples, key=lambda e: len(e.negatives))
        logger.warning(
            "%s: only %d negatives in some rows (first at %s); using %d per example",
            source,
            fewest,
            _place(shortest.where),
            n,
        )
    with_scores = sum(e.scores is not None for e in examples)
    if 0 < with_scores < len(examples):
        missing = next(e for e in examples if e.scores is None)
        raise InputError(missing.where[0], missing.where[1], "has no teacher scores while other rows do")
    columns: dict[str, list[Any]] = {"query": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for j in range(n):
        columns[f"negative_{j + 1}"] = [e.negatives[j] for e in examples]
    if with_scores:
        columns["label"] = [e.scores[: n + 1] for e in examples]  # type: ignore[index]
    return TrainingData(Dataset.from_dict(columns), kind, n, bool(with_scores), source)


# -- (b): id-based distillation ---------------------------------------------------------------------------
def _load_id_distillation(source: str, n_ways: int, max_samples: int | None) -> TrainingData:
    from sentence_transformers.util import resolve_ids

    train, queries, documents = _id_tables(source)
    if max_samples is not None:
        train = train.select(range(min(max_samples, len(train))))
    for column in ("query_id", "document_ids", "scores"):
        if column not in train.column_names:
            raise ParameterError("data", f"{source}: the train table needs query_id, document_ids, scores")
    first = train[0]
    if len(first["document_ids"]) != len(first["scores"]):
        raise ParameterError(
            "data", f"{source}: train row 1 has {len(first['document_ids'])} ids and {len(first['scores'])} scores"
        )
    ways = min(n_ways, len(first["document_ids"]))
    train = train.select_columns(["query_id", "document_ids", "scores"])
    train.set_transform(
        resolve_ids(
            {"query_id": (queries, "query_id", "text"), "document_ids": (documents, "document_id", "text")},
            keep_columns=("scores",),
            max_list_length=ways,
        )
    )
    return TrainingData(train, "ids", ways - 1, True, source)


def _id_tables(source: str) -> tuple[Any, Any, Any]:
    from datasets import load_dataset

    if source.startswith("hf:"):
        repo = source[3:].split(":")[0]
        try:
            return tuple(load_dataset(repo, name, split="train") for name in ("train", "queries", "documents"))
        except Exception as exc:  # hub unreachable, unknown repo...
            raise ParameterError("data", f"{source}: could not load from the Hugging Face hub ({exc})") from None
    path = Path(source)
    tables = []
    for name in ("train", "queries", "documents"):
        file = _table_file(path, name)
        assert file is not None
        builder = "parquet" if file.suffix == ".parquet" else "json"
        tables.append(load_dataset(builder, data_files=str(file), split="train"))
    _check_ids(tables[1], "query_id", path / "queries")
    _check_ids(tables[2], "document_id", path / "documents")
    return tuple(tables)  # type: ignore[return-value]


def _check_ids(table: Any, id_column: str, where: Path) -> None:
    if id_column not in table.column_names or "text" not in table.column_names:
        raise MbretError(f"{where}: needs columns {id_column} and text, has {', '.join(table.column_names)}")


def _table_file(directory: Path, name: str) -> Path | None:
    for suffix in (".parquet", ".jsonl"):
        if (directory / f"{name}{suffix}").is_file():
            return directory / f"{name}{suffix}"
    return None


# -- (d): BEIR train qrels --------------------------------------------------------------------------------
def _load_beir_pairs(source: str, split: str, max_samples: int | None) -> TrainingData:
    from datasets import Dataset

    from mbret.data.datasets import doc_text, load_dataset

    dataset = load_dataset(source, split=split)
    queries, positives = [], []
    for qid, judged in dataset.qrels.items():
        for doc_id, grade in judged.items():
            if grade > 0 and doc_id in dataset.corpus:
                queries.append(dataset.queries[qid])
                positives.append(doc_text(dataset.corpus[doc_id]))
    if not queries:
        raise ParameterError("data", f"{source}: no positive judgements in the {split} qrels")
    if max_samples is not None:
        queries, positives = queries[:max_samples], positives[:max_samples]
    table = Dataset.from_dict({"query": queries, "positive": positives})
    return TrainingData(table, "beir", 0, False, source)


# -- reading rows -----------------------------------------------------------------------------------------
def _source_rows(source: str) -> Iterator[tuple[tuple[Path | str, int | None], dict[str, Any]]]:
    if source.startswith("hf:"):
        from datasets import load_dataset

        repo, _, name = source[3:].partition(":")
        try:
            table = load_dataset(repo, name or None, split="train")
        except Exception as exc:
            raise ParameterError("data", f"{source}: could not load from the Hugging Face hub ({exc})") from None
        for i, row in enumerate(table):
            yield (source, i + 1), dict(row)
        return
    yield from _rows(Path(source))


def _rows(path: Path, limit: int | None = None) -> Iterator[tuple[tuple[Path | str, int | None], dict[str, Any]]]:
    """(where, row) from a JSONL or Parquet file; `where` is (path, line or row number)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise InputError(path, None, f"not a readable Parquet file ({exc})") from None
        for i, row in enumerate(table.to_pylist()):
            if limit is not None and i >= limit:
                return
            yield (path, i + 1), row
        return
    from mbret.data.datasets import iter_jsonl

    for count, (number, row) in enumerate(iter_jsonl(path), start=1):
        yield (path, number), row
        if limit is not None and count >= limit:
            return


def _first_key(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in row:
            return row[key]
    return None


def _place(where: tuple[Path | str, int | None]) -> str:
    return f"{where[0]}:{where[1]}" if where[1] is not None else str(where[0])


def _bad(where: tuple[Path | str, int | None], message: str) -> None:
    raise InputError(where[0], where[1], message)
