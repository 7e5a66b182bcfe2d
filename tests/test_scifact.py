"""Real-data check: all-MiniLM-L6-v2 on SciFact through `mbret eval` matches its published NDCG@10.

Published: 0.64508 (MTEB, embeddings-benchmark/mtebpaper results/all-MiniLM-L6-v2/SciFact.json); see
docs/benchmarks.md for the citation and the conventions. Takes a few minutes on 2 cores; CI runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SCIFACT

PUBLISHED_NDCG10 = 0.64508
PUBLISHED_RECALL100 = 0.925


@pytest.mark.slow
def test_minilm_scifact_matches_published(tmp_path: Path, cli) -> None:
    assert SCIFACT.is_dir(), f"{SCIFACT} is missing: CI and sessions have ../shared/data beside the repo"
    out = tmp_path / "scifact"
    result = cli("eval", SCIFACT, "--model", "minilm", "--output", out)
    assert result.code == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert results["num_queries"] == 300 and results["num_docs"] == 5183
    assert abs(results["metrics"]["ndcg@10"] - PUBLISHED_NDCG10) <= 0.005, results["metrics"]
    assert abs(results["metrics"]["recall@100"] - PUBLISHED_RECALL100) <= 0.01, results["metrics"]
    run_lines = (out / "run.trec").read_text().splitlines()
    assert len(run_lines) == 300 * 100
