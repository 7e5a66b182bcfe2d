"""`mbret score`: teacher scores for every (query, document) of a training file, for distillation.

The teacher is a sentence-transformers `CrossEncoder` (any hub id or local directory), or `dense:MODEL`, a
bi-encoder whose cosine similarity stands in for one (e.g. `dense:minilm`, which works offline). Rows are
scored in batches and appended to OUTPUT.partial as they finish, so a killed run resumes where it stopped;
the finished file is renamed into place. Output: FlagEmbedding JSONL (format c), or an id-based directory
(format b: train/queries/documents JSONL, ids from a hash of the text).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mbret.errors import MbretError, ParameterError
from mbret.io import atomic_file, atomic_new_dir
from mbret.training.data import Example, _read_examples, detect_format

CACHE_LIMIT = 200_000  # texts whose dense-teacher vectors are kept


@dataclass
class Teacher:
    """Scores (query, document) pairs; higher is more relevant."""

    name: str
    kind: str  # cross-encoder | dense
    model: Any
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, name: str, device: str | None = None) -> Teacher:
        from mbret.retrieval.backbone import choose_device

        if name.startswith("dense:"):
            from mbret.retrieval.dense import DenseEncoder

            return cls(name, "dense", DenseEncoder.load(name[len("dense:") :], device=device))
        from sentence_transformers import CrossEncoder

        from mbret.retrieval.backbone import resolve_model_path

        try:
            model = CrossEncoder(resolve_model_path(name), device=choose_device(device))
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ParameterError(
                "teacher",
                f"{name}: could not load a cross-encoder ({first}); "
                "for a bi-encoder teacher write dense:MODEL, e.g. dense:minilm",
            ) from None
        return cls(name, "cross-encoder", model)

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> list[float]:
        if not pairs:
            return []
        if self.kind == "dense":
            queries = self._vectors([q for q, _ in pairs], "query", batch_size)
            docs = self._vectors([d for _, d in pairs], "document", batch_size)
            return [float(v) for v in (queries * docs).sum(axis=1)]
        scores = self.model.predict(list(pairs), batch_size=batch_size, show_progress_bar=False)
        return [float(s) for s in scores]

    def _vectors(self, texts: list[str], side: str, batch_size: int) -> Any:
        """A dense teacher's vectors, each distinct text encoded once (documents recur across rows)."""
        import numpy as np

        cache = self._cache.setdefault(side, {})
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        if todo:
            encode = self.model.encode_queries if side == "query" else self.model.encode_corpus
            kwargs = {} if side == "query" else {"show_progress": False}
            for text, vector in zip(todo, encode(todo, batch_size=batch_size, **kwargs)):
                if len(cache) >= CACHE_LIMIT:
                    cache.pop(next(iter(cache)))
                cache[text] = vector
        return np.stack([cache[t] for t in texts])


def score_training_file(
    source: str,
    teacher: Teacher,
    output: str | Path,
    fmt: str = "flag",
    batch_size: int = 64,
    rows_per_flush: int = 16,
    show_progress: bool = True,
) -> int:
    """Score every document of every row in `source` (format a or c); returns the number of rows written."""
    if fmt not in ("flag", "ids"):
        raise ParameterError("format", f"{fmt}: choose flag or ids")
    kind = detect_format(source)
    if kind not in ("flag", "triplets"):
        raise MbretError(f"{source}: `mbret score` reads triplets or FlagEmbedding JSONL/Parquet, not {kind} data")
    examples = _read_examples(source, kind, None)
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    done = _count_lines(partial)
    with (
        open(partial, "a", encoding="utf-8") as fh,
        tqdm(total=len(examples), initial=done, desc="Scoring", unit="query", disable=not show_progress) as bar,
    ):
        for block in _blocks(examples, done, rows_per_flush):
            pairs = [(e.query, d) for e in block for d in (e.positive, *e.negatives)]
            scores = iter(teacher.score(pairs, batch_size=batch_size))
            for e in block:
                pos_score = next(scores)
                neg_scores = [next(scores) for _ in e.negatives]
                row = {
                    "query": e.query,
                    "pos": [e.positive],
                    "neg": e.negatives,
                    "pos_scores": [pos_score],
                    "neg_scores": neg_scores,
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(block))
    if fmt == "flag":
        with atomic_file(output) as out, open(partial, encoding="utf-8") as src:
            for line in src:
                out.write(line)
    else:
        _write_id_directory(partial, output)
    partial.unlink()
    return len(examples)


def _blocks(examples: list[Example], start: int, size: int) -> Iterator[list[Example]]:
    for begin in range(start, len(examples), size):
        yield examples[begin : begin + size]


def _count_lines(path: Path) -> int:
    """Complete lines of a partial file (a torn last line, from a kill mid-write, is cut off)."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "wb") as fh:
            fh.write(complete)
    return complete.count(b"\n")


def _text_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _write_id_directory(scored: Path, output: Path) -> None:
    """Format (b): train rows `query_id, document_ids, scores` (positive first), queries, documents."""
    queries: dict[str, str] = {}
    documents: dict[str, str] = {}
    with atomic_new_dir(output) as tmp, open(tmp / "train.jsonl", "w", encoding="utf-8") as train:
        with open(scored, encoding="utf-8") as src:
            for line in src:
                row = json.loads(line)
                qid = _text_id(row["query"])
                queries[qid] = row["query"]
                ids = []
                for text in (*row["pos"], *row["neg"]):
                    ids.append(_text_id(text))
                    documents[ids[-1]] = text
                scores = [*row["pos_scores"], *row["neg_scores"]]
                train.write(json.dumps({"query_id": qid, "document_ids": ids, "scores": scores}) + "\n")
        train.flush()
        for name, table, id_key in (("queries", queries, "query_id"), ("documents", documents, "document_id")):
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for key, text in table.items():
                    fh.write(json.dumps({id_key: key, "text": text}, ensure_ascii=False) + "\n")
