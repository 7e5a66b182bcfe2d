"""benchmarks/gpu_check.py is what a session with a lent GPU runs in its few minutes of device time: a dry run
on the CPU keeps it working, so that time is never spent on a broken script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path: Path, scifact: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick"]
        + ["--data", str(scifact), "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    stages = json.loads((out / "gpu_check.json").read_text())
    failed = {name: entry.get("error") for name, entry in stages.items() if not entry["ok"]}
    assert done.returncode == 0 and not failed, (failed, done.stderr[-3000:])
    assert list(stages) == ["env", "dense", "colbert", "exact", "plaid", "cli", "long_docs", "train"]
    # the same index searched twice on the CPU must agree exactly; on a GPU these figures are the finding
    assert stages["exact"]["identical_top10"] == 1.0 and stages["exact"]["max_score_gap"] == 0.0
    assert stages["plaid"]["nbits2_k100_identical_top10"] == 1.0
    assert stages["dense"]["min_cosine_float32_vs_cpu_fp32"] > 0.9999
    assert stages["dense"]["min_cosine_bfloat16_vs_cpu_fp32"] > 0.99
    assert stages["cli"]["eval_rc"] == 0 and "cancer risk" in stages["cli"]["search_stdout"]
    long_docs = stages["long_docs"]
    assert long_docs["dense_tokens_per_doc"] == [8192] and long_docs["colbert_vectors_per_doc_max"] <= 8190
    assert long_docs["dense_min_cosine_batched_vs_alone"] > 0.9999
    assert long_docs["colbert_same_shapes_batched_vs_alone"]
    assert stages["train"]["steps"] == 3 and stages["train"]["samples_per_second"] > 0
    assert "| long_docs | True |" in (out / "gpu_check.md").read_text()
