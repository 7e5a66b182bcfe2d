"""Scoring retrieval against relevance judgements, one module per part:

- `metrics`: IR metrics through pytrec_eval (`evaluate_run`, `DEFAULT_METRICS`) and BEIR's identical-id policy;
- `runner`: `evaluate`, one dataset encoded, indexed, searched and scored (`mbret eval`);
- `suite`: a model scored on every dataset of a suite, next to the paper's numbers (`mbret eval --suite`);
- `evaluation`: `mbret eval` as one call by names and paths (`run_evaluation`): a model, an index or several
  fused, optionally reranked, or a suite;
- `reranking`: `mbret rerank` as one call (`rerank_first_stage`): a run file or an index's hits rescored;
- `registry`: the benchmark datasets and suites, with the conventions each is scored under;
- `sources`: registry datasets fetched into a verified local cache and loaded from there;
- `manifest`: what a result records to be rerun (versions, weights, device, settings);
- `paper`: the ModernBERT paper's retrieval numbers, shipped as data;
- `report`: runs side by side as a markdown table and a chart (`mbret report`).

Datasets themselves (corpora, queries, qrels, query sets) live in `mbret.data`; `load_corpus`, `load_dataset`,
`Dataset` and `doc_text` are re-exported here so that code written before they moved keeps working.
"""

from mbret.data.datasets import Dataset, doc_text, load_corpus, load_dataset
from mbret.eval.metrics import DEFAULT_METRICS, evaluate_run

__all__ = ["DEFAULT_METRICS", "Dataset", "doc_text", "evaluate_run", "load_corpus", "load_dataset"]
