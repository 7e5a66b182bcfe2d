"""Dataset loaders, metrics, the benchmark runner and reports."""

from mbret.data.datasets import Dataset, doc_text, load_corpus, load_dataset
from mbret.eval.metrics import DEFAULT_METRICS, evaluate_run

__all__ = ["DEFAULT_METRICS", "Dataset", "doc_text", "evaluate_run", "load_corpus", "load_dataset"]
