"""Query sets that stress a retriever where one dataset's queries do not: short and long queries.

SciFact's queries are long claims (≈ 12 words), so a ColBERT head that mishandles short queries (mostly
[MASK] after expansion) or long ones (cut at a fixed width) looks fine there. From one BEIR dataset these
build two more over the same corpus:

- **short**: each query cut to its first `words` words (4 by default; most of BEIR outside SciFact has
  3-10 word queries), same qrels;
- **long**: known-item queries, a few sentences from the middle of a document whose relevant document is
  that one, kept only when they hold at least `min_tokens` pre-tokens (words and punctuation marks, as
  BERT's pre-tokenizer splits them, so any WordPiece or BPE vocabulary gives at least as many tokens).

Deterministic: the same dataset and settings give the same queries (the long set's documents are drawn
with a seeded generator). `examples/make_query_sets.py` writes both as BEIR directories.
"""

from __future__ import annotations

import random
import re

from mbret.data.datasets import Dataset

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
_PRE_TOKEN = re.compile(r"\w+|[^\w\s]")


def pre_tokens(text: str) -> int:
    """Words and punctuation marks: a lower bound on any subword tokenizer's count."""
    return len(_PRE_TOKEN.findall(text))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def short_queries(dataset: Dataset, words: int = 4) -> Dataset:
    """Every judged query cut to its first `words` words; corpus and qrels unchanged."""
    if words < 1:
        raise ValueError(f"words {words}: must be at least 1")
    queries = {qid: " ".join(text.split()[:words]) for qid, text in dataset.queries.items()}
    return Dataset(
        name=f"{dataset.name}-short", corpus=dataset.corpus, queries=queries, qrels=dataset.qrels, split=dataset.split
    )


def long_queries(
    dataset: Dataset, num_queries: int = 300, sentences: int = 3, min_tokens: int = 64, seed: int = 0
) -> Dataset:
    """Known-item queries: `sentences` consecutive sentences from the middle of a document (never its first
    or last one), of at least `min_tokens` pre-tokens, judged relevant to that document only."""
    eligible = []
    for doc_id, doc in dataset.corpus.items():
        parts = split_sentences(doc.get("text", ""))
        if len(parts) < sentences + 2:
            continue
        start = (len(parts) - sentences) // 2
        query = " ".join(parts[start : start + sentences])
        if pre_tokens(query) >= min_tokens:
            eligible.append((doc_id, query))
    chosen = sorted(random.Random(seed).sample(range(len(eligible)), min(num_queries, len(eligible))))
    queries = {f"long-{eligible[i][0]}": eligible[i][1] for i in chosen}
    qrels = {f"long-{eligible[i][0]}": {eligible[i][0]: 1} for i in chosen}
    return Dataset(
        name=f"{dataset.name}-long", corpus=dataset.corpus, queries=queries, qrels=qrels, split=dataset.split
    )


def query_sets(dataset: Dataset) -> dict[str, Dataset]:
    """The dataset's own queries beside its short and long sets, keyed "full", "short", "long"."""
    return {"full": dataset, "short": short_queries(dataset), "long": long_queries(dataset)}
