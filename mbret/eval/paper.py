"""The ModernBERT paper's retrieval numbers (Table 1; BEIR per dataset from Tables 7 and 8), shipped as data.

Values are NDCG@10 x 100 as printed; `paper_value` returns them on our 0-1 scale. A run is compared with
one row of the table: `modernbert-base`, `modernbert-large` or `bert-base`, in the run's mode.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from mbret.errors import ParameterError

PAPER_FILE = Path(__file__).resolve().parents[1] / "data" / "paper_table1.json"


@cache
def paper_table() -> dict[str, Any]:
    return json.loads(PAPER_FILE.read_text(encoding="utf-8"))


def guess_paper_model(model: str) -> str:
    """The row a model is compared with by default: large if its name says so, BERT for BERT, else base."""
    name = model.lower()
    if "modernbert" not in name and "bert-base" in name:
        return "bert-base"
    return "modernbert-large" if "large" in name else "modernbert-base"


def paper_value(paper_model: str, mode: str, key: str) -> float | None:
    """The paper's NDCG@10 (0-1) for a dataset or suite average, or None where the paper has none."""
    models = paper_table()["models"]
    if paper_model not in models:
        raise ParameterError("paper_model", f"{paper_model}: choose one of {', '.join(models)}")
    value = models[paper_model].get(mode, {}).get(key)
    return None if value is None else round(value / 100, 4)


def citation() -> str:
    table = paper_table()
    return f"{table['citation']}; {table['tables']}"
