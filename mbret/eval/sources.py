"""Fetch registry datasets from their sources into a verified local cache, and load them from there.

Sources are tried in the registry's order: a local directory, the cache, the Hugging Face hub (in the
BEIR, MTEB, CoIR or MLDR schema), then ir_datasets. A download is written to
`$MBRET_CACHE/datasets/<name>/<split>/` as a plain BEIR directory plus `source.json` holding each file's
SHA-256; every later load checks those hashes, so a truncated or edited cache is caught instead of
silently scoring a different dataset. `MBRET_HF_MIRROR=DIR` maps a hub id `owner/name` to `DIR/owner/name`,
a local copy of the hub repository (how the tests run the real loading code offline).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mbret.data.datasets import Dataset, dataset_from_records, load_beir_dir, load_ir_datasets
from mbret.errors import MbretError
from mbret.eval.registry import DatasetSpec, HubSource
from mbret.io import atomic_new_dir, write_json_atomic

logger = logging.getLogger(__name__)

SOURCE_FILE = "source.json"


def datasets_cache() -> Path:
    from mbret.retrieval.backbone import cache_dir

    return cache_dir() / "datasets"


def load_spec(spec: DatasetSpec, data_dir: str | Path | None = None, cache: str | Path | None = None) -> Dataset:
    """The dataset of one registry entry (not a composite such as CQADupStack), with its title policy."""
    if spec.parts:
        raise MbretError(f"{spec.name} is scored as the mean of its parts; load each of {', '.join(spec.parts)}")
    dataset = _load_raw(spec, data_dir, cache)
    dataset.name = spec.name
    if not spec.join_title:
        for doc in dataset.corpus.values():
            doc["title"] = ""
    return dataset


def _load_raw(spec: DatasetSpec, data_dir: str | Path | None, cache: str | Path | None) -> Dataset:
    if spec.local is not None:
        return load_beir_dir(spec.local, split=spec.split)
    if data_dir is not None:
        # BEIR's own zips unpack CQADupStack as cqadupstack/<forum>
        for candidate in (Path(data_dir) / spec.name, Path(data_dir) / spec.name.replace("-", "/", 1)):
            if candidate.is_dir() and (candidate / "corpus.jsonl").is_file():
                return load_beir_dir(candidate, split=spec.split)
    target = Path(cache or datasets_cache()) / spec.name / spec.split
    failures: list[str] = []
    if (target / SOURCE_FILE).is_file():
        problem = verify_cached(target)
        if problem is None:
            return load_beir_dir(target, split=spec.split)
        logger.warning("%s: %s; fetching it again", target, problem)
        failures.append(f"cache {target}: {problem}")
    for source in spec.hub:
        try:
            dataset = fetch_hub(source, spec.split, Path(cache or datasets_cache()) / "hf")
        except MbretError as exc:
            failures.append(str(exc))
            continue
        return _cache(dataset, spec, target, f"hf:{source.repo} ({source.schema} schema)")
    if spec.irds:
        try:
            dataset = load_ir_datasets(spec.irds, split=spec.split)
        except MbretError as exc:
            failures.append(str(exc))
        else:
            return _cache(dataset, spec, target, f"irds:{spec.irds}")
    hint = f"; or put a BEIR directory at DATA_DIR/{spec.name} and pass it as data_dir"
    raise MbretError(f"{spec.name}: no source could be loaded ({' | '.join(failures) or 'none registered'}){hint}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(split: str) -> list[str]:
    return ["corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"]


def verify_cached(directory: Path) -> str | None:
    """None if every file matches the hash recorded when it was cached, else what is wrong."""
    try:
        record = json.loads((directory / SOURCE_FILE).read_text(encoding="utf-8"))
        expected = record["sha256"]
    except (OSError, ValueError, KeyError):
        return f"unreadable {SOURCE_FILE}"
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its recorded SHA-256 (truncated or edited)"
    return None


def _cache(dataset: Dataset, spec: DatasetSpec, target: Path, source: str) -> Dataset:
    """Write the fetched dataset as a BEIR directory with hashes, atomically; returns it as fetched."""
    counts = {"documents": len(dataset.corpus), "queries": len(dataset.queries)}
    if spec.expected is not None and (counts["documents"], counts["queries"]) != spec.expected:
        logger.warning(
            "%s from %s has %d documents and %d judged queries; the registry expects %d and %d",
            spec.name, source, counts["documents"], counts["queries"], *spec.expected,
        )  # fmt: skip
    with atomic_new_dir(target) as tmp:
        write_beir_files(tmp, dataset, spec.split)
        record = {
            "dataset": spec.name,
            "split": spec.split,
            "source": source,
            "counts": counts,
            "expected": list(spec.expected) if spec.expected else None,
            "sha256": {name: _sha256(tmp / name) for name in _files(spec.split)},
        }
        write_json_atomic(tmp / SOURCE_FILE, record)
    return dataset  # already validated by dataset_from_records; re-reading the files would parse it twice


def write_beir_files(directory: Path, dataset: Dataset, split: str) -> None:
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    with open(directory / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, doc in dataset.corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}, ensure_ascii=False) + "\n")
    with open(directory / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in dataset.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(directory / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in dataset.qrels.items():
            for doc_id, rel in judged.items():
                fh.write(f"{qid}\t{doc_id}\t{rel}\n")


# -- the hub schemas ------------------------------------------------------------------------------------


def hub_path(repo: str) -> str:
    """`owner/name`, or its copy under `$MBRET_HF_MIRROR` when that directory exists."""
    mirror = os.environ.get("MBRET_HF_MIRROR")
    if mirror and (Path(mirror) / repo).is_dir():
        return str(Path(mirror) / repo)
    return repo


def _rows(repo: str, config: str | None, split: str, cache: Path) -> Any:
    import datasets

    try:
        return datasets.load_dataset(hub_path(repo), config, split=split, cache_dir=str(cache))
    except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; all mean "could not load"
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MbretError(f"hf:{repo} [{config or 'default'}/{split}]: {type(exc).__name__}: {first}") from None


def _columns(rows: Any, needed: Iterable[str], where: str) -> None:
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise MbretError(f"{where}: missing column(s) {', '.join(missing)} (has {', '.join(rows.column_names)})")


def fetch_hub(source: HubSource, split: str, cache: Path) -> Dataset:
    """Load one hub dataset in its schema into a `Dataset` (ids checked, queries limited to the judged)."""
    repo = source.repo
    if source.schema == "mldr":
        return _fetch_mldr(source, split, cache)
    qrel_columns = ["query-id", "corpus-id", "score"]
    if source.schema == "mteb":
        corpus = _rows(repo, "corpus", "corpus", cache)
        queries = _rows(repo, "queries", "queries", cache)
        qrels = _rows(repo, "default", split, cache)
    elif source.schema == "mteb-subset":
        corpus = _rows(repo, f"{source.subset}-corpus", "corpus", cache)
        queries = _rows(repo, f"{source.subset}-queries", "queries", cache)
        qrels = _rows(repo, f"{source.subset}-qrels", split, cache)
    elif source.schema == "beir":
        corpus = _rows(repo, "corpus", "corpus", cache)
        queries = _rows(repo, "queries", "queries", cache)
        qrels = _rows(f"{repo}-qrels", None, split, cache)
    elif source.schema == "coir":
        corpus = _rows(f"{repo}-queries-corpus", None, "corpus", cache)
        queries = _rows(f"{repo}-queries-corpus", None, "queries", cache)
        qrels = _rows(f"{repo}-qrels", None, split, cache)
        qrel_columns = ["query_id", "corpus_id", "score"]
    else:
        raise MbretError(f"hf:{repo}: unknown schema {source.schema!r}")
    _columns(corpus, ["_id", "text"], f"hf:{repo} corpus")
    _columns(queries, ["_id", "text"], f"hf:{repo} queries")
    _columns(qrels, qrel_columns, f"hf:{repo} qrels")
    has_title = "title" in corpus.column_names
    qid, did, score = qrel_columns
    return dataset_from_records(
        f"hf:{repo}",
        ((r["_id"], (r["title"] or "") if has_title else "", r["text"]) for r in corpus),
        ((r["_id"], r["text"]) for r in queries),
        ((r[qid], r[did], int(r[score])) for r in qrels),
        split=split,
    )


def _fetch_mldr(source: HubSource, split: str, cache: Path) -> Dataset:
    """`Shitao/MLDR`: config `<lang>` rows carry the query and its positive passages; `corpus-<lang>` the docs."""
    lang = source.subset or "en"
    queries = _rows(source.repo, lang, split, cache)
    corpus = _rows(source.repo, f"corpus-{lang}", "corpus", cache)
    _columns(queries, ["query_id", "query", "positive_passages"], f"hf:{source.repo} {lang}")
    _columns(corpus, ["docid", "text"], f"hf:{source.repo} corpus-{lang}")
    qrels = ((r["query_id"], p["docid"], 1) for r in queries for p in r["positive_passages"])
    return dataset_from_records(
        f"hf:{source.repo}",
        ((r["docid"], "", r["text"]) for r in corpus),
        ((r["query_id"], r["query"]) for r in queries),
        qrels,
        split=split,
    )
