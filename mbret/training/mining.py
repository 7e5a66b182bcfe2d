"""`mbret mine`: hard negatives for (query, positive) pairs, from a dense model's ranking of the corpus.

A candidate is kept as a negative when it ranks in [range_min, range_max) for the query, is not a judged
positive, and scores below the positive by the margins (absolute: score < positive - margin; relative:
score < positive * (1 - relative_margin)): the usual guard against unjudged positives (false negatives)
at the very top of the ranking. The corpus embeddings are cached chunk by chunk, so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbret.errors import MbretError, ParameterError
from mbret.io import atomic_file, write_json_atomic

CACHE_CHUNK = 4096


@dataclass
class MiningParams:
    num_negatives: int = 8
    range_min: int = 0  # skip this many top-ranked candidates (false-negative guard)
    range_max: int = 100  # look no deeper than this rank
    margin: float | None = None  # absolute: negative score < positive score - margin
    relative_margin: float | None = 0.05  # negative score < positive score * (1 - relative_margin)

    def check(self) -> None:
        if self.num_negatives < 1:
            raise ParameterError("num_negatives", f"{self.num_negatives}: must be at least 1")
        if not 0 <= self.range_min < self.range_max:
            raise ParameterError(
                "range_min", f"{self.range_min} with range_max {self.range_max}: need 0 <= range_min < range_max"
            )
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise ParameterError("relative_margin", f"{self.relative_margin}: must be in [0, 1)")


@dataclass
class MinedExample:
    query_id: str
    query: str
    positive_id: str
    positive: str
    negative_ids: list[str]
    negatives: list[str]
    positive_score: float
    negative_scores: list[float]


@dataclass
class MiningReport:
    pairs: int
    kept: int
    dropped: int  # pairs with fewer than num_negatives candidates passing the filters
    mean_positive_rank: float  # where the miner ranks the positive (1-based; deeper than range_max counts as it)


def mine_hard_negatives(
    queries: dict[str, str],
    pairs: Sequence[tuple[str, str]],
    corpus: dict[str, dict[str, str]],
    encoder: Any,
    params: MiningParams | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    show_progress: bool = True,
) -> tuple[list[MinedExample], MiningReport]:
    """Mine with a DenseEncoder (unit vectors, inner product) over an exact FAISS index."""
    import faiss

    from mbret.data.datasets import doc_text

    params = params or MiningParams()
    params.check()
    missing = [q for q, d in pairs if q not in queries or d not in corpus]
    if missing:
        raise MbretError(f"{len(missing)} pairs name a query or document that is not in the data (first: {missing[0]})")
    doc_ids = list(corpus)
    texts = [doc_text(corpus[d]) for d in doc_ids]
    embeddings = _encode_corpus_cached(encoder, doc_ids, texts, cache_dir, batch_size, show_progress)
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    positives: dict[str, set[str]] = {}
    for q, d in pairs:
        positives.setdefault(q, set()).add(d)
    qids = list(positives)
    query_vectors = encoder.encode_queries([queries[q] for q in qids], batch_size=batch_size)
    depth = min(params.range_max + max(len(p) for p in positives.values()), len(doc_ids))
    scores, rows = index.search(query_vectors, depth)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    ranking = {q: (scores[i], rows[i]) for i, q in enumerate(qids)}
    vectors_of_query = {q: query_vectors[i] for i, q in enumerate(qids)}
    examples, dropped, ranks = [], 0, []
    for qid, pos_id in pairs:
        q_scores, q_rows = ranking[qid]
        positive_score = float(embeddings[row_of[pos_id]] @ vectors_of_query[qid])
        found = np.nonzero(q_rows == row_of[pos_id])[0]
        ranks.append(int(found[0]) + 1 if len(found) else depth + 1)
        chosen: list[tuple[str, float]] = []
        rank = 0
        for score, row in zip(q_scores.tolist(), q_rows.tolist()):
            if row < 0:
                break
            doc = doc_ids[row]
            if doc in positives[qid]:
                continue
            rank += 1  # rank among non-positives
            if rank <= params.range_min or rank > params.range_max:
                continue
            if params.margin is not None and not score < positive_score - params.margin:
                continue
            if params.relative_margin is not None and not score < positive_score * (1 - params.relative_margin):
                continue
            chosen.append((doc, score))
            if len(chosen) == params.num_negatives:
                break
        if len(chosen) < params.num_negatives:
            dropped += 1
            continue
        examples.append(
            MinedExample(
                query_id=qid,
                query=queries[qid],
                positive_id=pos_id,
                positive=texts[row_of[pos_id]],
                negative_ids=[d for d, _ in chosen],
                negatives=[texts[row_of[d]] for d, _ in chosen],
                positive_score=positive_score,
                negative_scores=[s for _, s in chosen],
            )
        )
    report = MiningReport(len(pairs), len(examples), dropped, float(np.mean(ranks)) if ranks else 0.0)
    return examples, report


def _encode_corpus_cached(
    encoder: Any,
    doc_ids: list[str],
    texts: list[str],
    cache_dir: str | Path | None,
    batch_size: int,
    show_progress: bool,
) -> np.ndarray:
    """Corpus embeddings, CACHE_CHUNK documents per cached .npy, keyed by model and corpus content."""
    if cache_dir is None:
        return encoder.encode_corpus(texts, batch_size=batch_size, show_progress=show_progress)
    key = hashlib.sha256()
    key.update(encoder.name.encode())
    for doc_id, text in zip(doc_ids, texts):
        key.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    directory = Path(cache_dir) / f"corpus-{key.hexdigest()[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "about.json", {"model": encoder.name, "documents": len(doc_ids)})
    parts = []
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), desc="Encoding corpus", unit="doc", disable=not show_progress) as bar:
        for start in range(0, len(texts), CACHE_CHUNK):
            file = directory / f"chunk-{start // CACHE_CHUNK:06d}.npy"
            chunk = texts[start : start + CACHE_CHUNK]
            if file.is_file():
                part = np.load(file, allow_pickle=False)
            else:
                part = encoder.encode_corpus(chunk, batch_size=batch_size, show_progress=False)
                with atomic_file(file, "wb") as fh:
                    np.save(fh, part, allow_pickle=False)
            parts.append(part)
            bar.update(len(chunk))
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32))


def write_mined(examples: Sequence[MinedExample], path: str | Path, fmt: str = "flag") -> None:
    """Write format (a) triplets (`query, positive, negative_1..n`) or (c) FlagEmbedding (`query, pos, neg`),
    atomically. Miner scores are not teacher scores, so none are written; `mbret score` adds those."""
    if fmt not in ("triplets", "flag"):
        raise ParameterError("format", f"{fmt}: choose triplets or flag")
    with atomic_file(path) as fh:
        for e in examples:
            if fmt == "flag":
                row: dict[str, Any] = {"query": e.query, "pos": [e.positive], "neg": e.negatives}
            else:
                row = {"query": e.query, "positive": e.positive}
                row.update({f"negative_{i + 1}": n for i, n in enumerate(e.negatives)})
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
