"""Real-data check: all-MiniLM-L6-v2 on SciFact through the custom suite `examples/suites/scifact.yaml`
(`mbret eval --suite`) matches its published NDCG@10, and the suite output carries the paper comparison.

Published: 0.64508 (MTEB, embeddings-benchmark/mtebpaper results/all-MiniLM-L6-v2/SciFact.json); see
docs/benchmarks.md for the citation and the conventions. Takes a few minutes on 2 cores; CI runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PUBLISHED_NDCG10 = 0.64508
PUBLISHED_RECALL100 = 0.925


@pytest.mark.slow
def test_minilm_scifact_matches_published(scifact_dense_suite: Path) -> None:
    out = scifact_dense_suite / "scifact"
    results = json.loads((out / "results.json").read_text())
    assert results["num_queries"] == 300 and results["num_docs"] == 5183
    assert abs(results["metrics"]["ndcg@10"] - PUBLISHED_NDCG10) <= 0.005, results["metrics"]
    assert abs(results["metrics"]["recall@100"] - PUBLISHED_RECALL100) <= 0.01, results["metrics"]
    assert results["settings"]["lengths"]["used"] == {"document_length": 256}  # MiniLM's own, as MTEB ran it
    run_lines = (out / "run.trec").read_text().splitlines()
    assert len(run_lines) == 300 * 100
    summary = json.loads((scifact_dense_suite / "results.json").read_text())
    row = summary["paper"]["rows"][0]
    assert row["dataset"] == "SciFact" and row["paper"] == 0.57
    assert row["diff"] == pytest.approx(results["metrics"]["ndcg@10"] - 0.57, abs=1e-4)
