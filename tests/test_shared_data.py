"""A missing copy of the shared real data is a one-line message saying where it is expected, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_missing_dataset_is_one_line_naming_where_it_is_expected(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-shared-data"
    env = {**os.environ, "MBRET_SHARED_DATA": str(nowhere)}
    # a real-data test whose module imports nothing heavy, so the check stays fast
    test = "tests/test_gpu_check.py::test_gpu_check_dry_run_on_cpu"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-p", "no:cacheprovider", "-o", "addopts=", "-rE"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    expected = nowhere / "beir" / "scifact"
    lines = [line for line in output.splitlines() if "is missing" in line]
    assert lines[0] == (
        f"shared/data/beir/scifact is missing: expected beside the repo at {expected} "
        "(MBRET_SHARED_DATA names another copy of shared/data)"
    ), output
    assert "Traceback" not in output and "conftest.py:" not in output and "def " not in output, output
    assert "1 error" in output, output
