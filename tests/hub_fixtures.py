"""Local copies of Hugging Face dataset repos, in the exact on-hub schemas, for the offline loader tests.

A repo is a directory with a README.md whose `configs:` metadata names each config's splits and data
files, as the hub's own repos do; `datasets.load_dataset(DIR, config, split=...)` reads it as it would
read the hub. Point `MBRET_HF_MIRROR` at the root and the registry's hub ids resolve here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Rows = list[dict[str, Any]]


def write_hub_repo(root: Path, repo: str, configs: dict[str | None, dict[str, Rows]]) -> Path:
    """Write `root/repo` with one JSONL file per (config, split); config None is the repo's default."""
    target = root / repo
    target.mkdir(parents=True, exist_ok=True)
    meta = ["---", "configs:"]
    for config, splits in configs.items():
        name = config or "default"
        meta.append(f"- config_name: {name}")
        if config is None:
            meta.append("  default: true")
        meta.append("  data_files:")
        for split, rows in splits.items():
            path = target / name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            meta += [f"  - split: {split}", f"    path: {name}/{split}.jsonl"]
    meta.append("---")
    (target / "README.md").write_text("\n".join(meta) + "\n", encoding="utf-8")
    return target


DOCS = [
    ("d1", "Smoking", "smoking increases the risk of lung cancer"),
    ("d2", "Mice", "brain activity in mice fell after the drug"),
    ("d3", "", "vitamin d levels and bone fractures in older adults"),
    ("d4", "Virus", "immune response to viral infection in human cells"),
]
QUERIES = [("q1", "does smoking cause cancer"), ("q2", "brain of mice"), ("q3", "unjudged query")]
QRELS = [("q1", "d1", 1), ("q2", "d2", 2)]


def mteb_repo(root: Path, repo: str = "mteb/scifact") -> Path:
    """`mteb/scifact`: configs corpus (split corpus), queries (split queries), default (qrels per split)."""
    return write_hub_repo(
        root,
        repo,
        {
            "corpus": {"corpus": [{"_id": d, "title": t, "text": x} for d, t, x in DOCS]},
            "queries": {"queries": [{"_id": q, "text": x} for q, x in QUERIES]},
            "default": {
                "test": [{"query-id": q, "corpus-id": d, "score": float(s)} for q, d, s in QRELS],
                "train": [{"query-id": "q3", "corpus-id": "d3", "score": 1.0}],
            },
        },
    )


def beir_repo(root: Path, repo: str = "BeIR/scifact") -> Path:
    """`BeIR/scifact` (configs corpus, queries) and `BeIR/scifact-qrels` (default config, splits test, train)."""
    write_hub_repo(
        root,
        repo,
        {
            "corpus": {"corpus": [{"_id": d, "title": t, "text": x} for d, t, x in DOCS]},
            "queries": {"queries": [{"_id": q, "title": "", "text": x} for q, x in QUERIES]},
        },
    )
    return write_hub_repo(
        root, f"{repo}-qrels", {None: {"test": [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in QRELS]}}
    )


def mteb_subset_repo(root: Path, repo: str, subset: str, split: str = "test") -> Path:
    """`<subset>-corpus`, `<subset>-queries`, `<subset>-qrels`, as CoIR-Retrieval/CodeSearchNet (per language)."""
    return write_hub_repo(
        root,
        repo,
        {
            f"{subset}-corpus": {"corpus": [{"_id": d, "title": t, "text": x} for d, t, x in DOCS]},
            f"{subset}-queries": {
                "queries": [{"_id": q, "text": x, "partition": "test"} for q, x in QUERIES],
            },
            f"{subset}-qrels": {split: [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in QRELS]},
        },
    )


def coir_repo(root: Path, repo: str, identical: bool = False) -> Path:
    """CoIR's own layout: `<repo>-queries-corpus` (config default, splits queries and corpus with the same
    columns `_id, partition, text, language, title`) and `<repo>-qrels` (`query_id, corpus_id, score`).

    With `identical`, query q1 and a corpus document share the id "q1" (the identical-id policy drops it).
    """
    docs = [{"_id": d, "title": "", "text": x, "partition": "test", "language": "en"} for d, _, x in DOCS]
    if identical:
        docs.append(
            {"_id": "q1", "title": "", "text": "does smoking cause cancer", "partition": "test", "language": "en"}
        )
    write_hub_repo(
        root,
        f"{repo}-queries-corpus",
        {
            None: {
                "queries": [
                    {"_id": q, "title": "", "text": x, "partition": "test", "language": "en"} for q, x in QUERIES
                ],
                "corpus": docs,
            }
        },
    )
    return write_hub_repo(
        root,
        f"{repo}-qrels",
        {None: {"test": [{"query_id": q, "corpus_id": d, "score": s} for q, d, s in QRELS]}},
    )


def mldr_repo(root: Path, repo: str = "Shitao/MLDR", lang: str = "en") -> Path:
    """`Shitao/MLDR`: config `<lang>` (query rows with positive passages), config `corpus-<lang>`."""
    texts = {d: x for d, _, x in DOCS}
    rows = [
        {
            "query_id": q,
            "query": x,
            "positive_passages": [{"docid": d, "text": texts[d]} for qq, d, _ in QRELS if qq == q],
            "negative_passages": [],
        }
        for q, x in QUERIES[:2]
    ]
    return write_hub_repo(
        root,
        repo,
        {
            lang: {"test": rows, "dev": rows[:1]},
            f"corpus-{lang}": {"corpus": [{"docid": d, "text": x} for d, x in texts.items()]},
        },
    )
