"""Corpora, queries and qrels: BEIR directories, JSONL/TSV files, ir_datasets and Hugging Face sources, and
the short- and long-query sets built from a dataset. The lowest layer above `mbret.io` and `mbret.errors`:
retrieval, training and eval all import it, and it imports none of them."""

from mbret.data.datasets import (
    Corpus,
    Dataset,
    Qrels,
    Queries,
    doc_text,
    load_beir_dir,
    load_corpus,
    load_dataset,
)
from mbret.data.query_sets import long_queries, query_sets, short_queries

__all__ = [
    "Corpus",
    "Dataset",
    "Qrels",
    "Queries",
    "doc_text",
    "load_beir_dir",
    "load_corpus",
    "load_dataset",
    "long_queries",
    "query_sets",
    "short_queries",
]
