"""Synthetic, learnable retrieval data for training tests: queries name a topic, positives share its words."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "cancer": "tumour cancer smoking risk patients oncology",
    "brain": "brain neurons mice cortex memory learning",
    "virus": "virus immune infection cells antibody vaccine",
    "heart": "heart cardiac blood pressure artery stroke",
    "diet": "vitamin diet nutrition food intake obesity",
    "sleep": "sleep circadian night rest insomnia melatonin",
    "gene": "gene dna expression mutation genome protein",
    "lung": "lung breathing asthma airway oxygen pneumonia",
}


def synthetic_rows(n: int = 64, negatives: int = 3, seed: int = 0) -> list[dict]:
    """FlagEmbedding rows with teacher scores: positives from the query's topic, negatives from others."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for i in range(n):
        topic = names[i % len(names)]
        words = TOPICS[topic].split()
        others = rng.sample([t for t in names if t != topic], negatives)
        rows.append(
            {
                "query": " ".join(rng.sample(words, 2)),
                "pos": [" ".join(rng.sample(words, 4)) + " study"],
                "neg": [" ".join(rng.sample(TOPICS[o].split(), 4)) + " study" for o in others],
                "pos_scores": [10.0],
                "neg_scores": [round(rng.uniform(0.0, 2.0), 3) for _ in others],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def write_flag(path: Path, n: int = 64, negatives: int = 3, scores: bool = True) -> Path:
    rows = synthetic_rows(n, negatives)
    if not scores:
        for row in rows:
            del row["pos_scores"], row["neg_scores"]
    return write_jsonl(path, rows)


def write_triplets(path: Path, n: int = 64) -> Path:
    rows = [
        {"query": r["query"], "positive": r["pos"][0], **{f"negative_{i + 1}": t for i, t in enumerate(r["neg"])}}
        for r in synthetic_rows(n)
    ]
    return write_jsonl(path, rows)


def write_id_directory(path: Path, n: int = 32) -> Path:
    """Format (b), as lightonai/ms-marco-en-bge lays it out: train / queries / documents tables."""
    rows = synthetic_rows(n)
    queries, documents, train = {}, {}, []
    for i, row in enumerate(rows):
        qid = f"q{i}"
        queries[qid] = row["query"]
        ids = []
        for j, text in enumerate(row["pos"] + row["neg"]):
            doc_id = f"d{i}-{j}"
            documents[doc_id] = text
            ids.append(doc_id)
        train.append({"query_id": qid, "document_ids": ids, "scores": row["pos_scores"] + row["neg_scores"]})
    write_jsonl(path / "train.jsonl", train)
    write_jsonl(path / "queries.jsonl", [{"query_id": k, "text": v} for k, v in queries.items()])
    write_jsonl(path / "documents.jsonl", [{"document_id": k, "text": v} for k, v in documents.items()])
    return path


def synthetic_beir(path: Path, n_queries: int = 24) -> Path:
    """A BEIR directory over the same topics, with train and test qrels."""
    rng = random.Random(1)
    names = list(TOPICS)
    corpus, queries, train, test = {}, {}, {}, {}
    for topic in names:
        for j in range(4):
            corpus[f"{topic}{j}"] = {"title": topic, "text": " ".join(rng.sample(TOPICS[topic].split(), 4))}
    for i in range(n_queries):
        topic = names[i % len(names)]
        qid = f"q{i}"
        queries[qid] = " ".join(rng.sample(TOPICS[topic].split(), 2))
        (train if i < n_queries * 2 // 3 else test)[qid] = {f"{topic}{i % 4}": 1}
    from .conftest import write_beir

    write_beir(path, corpus, queries, train, split="train")
    write_beir(path, corpus, queries, test, split="test")
    return path
