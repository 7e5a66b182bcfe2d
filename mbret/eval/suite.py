"""`mbret eval --suite`: score one model on every dataset of a suite, next to the paper's numbers.

Output layout (every file written atomically, each dataset as soon as it is scored):

    OUTPUT/results.json          the suite: manifest, per-dataset metrics, averages, paper comparison
    OUTPUT/<dataset>/results.json, run.trec    one dataset, as `mbret eval` writes them
    OUTPUT/<dataset>/index/      the index, with `save_index`

The model is loaded once; its lengths are set per dataset from the registry (capped at the model's own
limit, and recorded), and the identical-id policy and split come from the registry too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import ParameterError
from mbret.eval.manifest import run_manifest
from mbret.eval.metrics import DEFAULT_METRICS
from mbret.eval.paper import citation, guess_paper_model, paper_value
from mbret.eval.registry import REGISTRY, DatasetSpec, Suite
from mbret.eval.runner import evaluate
from mbret.eval.sources import load_spec
from mbret.io import write_json_atomic
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.retriever import Retriever, check_mode, load_encoder
from mbret.types import SearchParams

SUMMARY_FILE = "results.json"


@dataclass
class SuiteOptions:
    """Everything but the suite: the model and how to run it (None = registry or model default)."""

    model: str
    mode: str = "dense"
    index_type: str | None = None
    index_params: dict[str, Any] = field(default_factory=dict)
    search_params: SearchParams | None = None  # per-call search settings for every dataset's searches
    metrics: tuple[str, ...] = DEFAULT_METRICS
    batch_size: int = 64
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None  # deprecated spelling of document_length (dense)
    query_length: int | None = None  # colbert
    document_length: int | None = None  # both heads: overrides the registry for every dataset
    query_expansion: bool | None = None  # colbert: None, the model's own (off for a head built from any other)
    seed: int = 0
    paper_model: str | None = None  # the paper row to compare with; guessed from the model name
    data_dir: Path | None = None
    cache: Path | None = None
    save_index: bool = False
    resume: bool = False
    show_progress: bool = True


def dataset_lengths(
    mode: str, spec: DatasetSpec, options: SuiteOptions, own: int, encoder: Any = None
) -> dict[str, Any]:
    """The lengths one dataset runs at: flags, else the registry's capped at the model's limit `own`; a
    ColBERT query length the registry leaves open is the encoder's default for that document length."""
    if mode == "colbert":
        asked = {"query_length": spec.lengths.colbert_query, "document_length": spec.lengths.colbert_document}
        document_length = options.document_length or min(asked["document_length"], own)
        if options.query_length or asked["query_length"] is not None:
            query_length = options.query_length or min(asked["query_length"], own)
        elif isinstance(encoder, ColBERTEncoder):
            query_length = encoder.default_query_length(document_length=document_length)
        else:
            query_length = None
        used = {"query_length": query_length, "document_length": document_length}
    else:
        asked = {"document_length": spec.lengths.dense}  # None: the model's own, as MTEB
        given = options.document_length or options.max_length
        used = {"document_length": given or min(asked["document_length"] or own, own)}
    capped = any(asked[k] is not None and used[k] < asked[k] for k in used) and not _overridden(options)
    return {"used": used, "registry": asked, "capped_by_model": capped}


def _apply_lengths(encoder: DenseEncoder | ColBERTEncoder, used: dict[str, int]) -> None:
    if isinstance(encoder, ColBERTEncoder):
        encoder.set_lengths(used["query_length"], used["document_length"])
    else:
        encoder.model.max_seq_length = used["document_length"]


def _run_key(
    manifest: dict[str, Any], options: SuiteOptions, index_type: str, spec: DatasetSpec, lengths: dict[str, Any]
) -> dict[str, Any]:
    """What a dataset's result depends on; `--resume` reuses a result only when all of it matches."""
    return {
        "weights_sha256": manifest["weights_sha256"],
        "mode": options.mode,
        "index_type": index_type,
        "index_params": options.index_params,
        "search_params": options.search_params.given() if options.search_params else None,
        "lengths": lengths["used"],
        "query_expansion": options.query_expansion,
        "conventions": spec.conventions(),
    }


def _overridden(options: SuiteOptions) -> bool:
    return any(v is not None for v in (options.max_length, options.query_length, options.document_length))


def _model_limit(encoder: DenseEncoder | ColBERTEncoder) -> int:
    if isinstance(encoder, ColBERTEncoder):
        return int(encoder.max_position or 8192)
    return int(encoder.max_length)  # the sentence-transformers model's own max_seq_length


def run_suite(
    suite: Suite, options: SuiteOptions, output: str | Path, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Score every dataset, writing as it goes; returns the suite summary (also OUTPUT/results.json)."""
    output = Path(output)
    index_type = check_mode(options.mode, options.index_type)
    paper_model = options.paper_model or guess_paper_model(options.model)
    paper_value(paper_model, options.mode, "beir")  # refuses an unknown row before any work
    start = time.perf_counter()
    encoder = load_encoder(
        options.model,
        options.mode,
        device=options.device,
        dtype=options.dtype,
        seed=options.seed,
        query_expansion=options.query_expansion,
    )
    own = _model_limit(encoder)
    manifest = run_manifest(encoder, seed=options.seed)
    settings = {
        "mode": options.mode,
        "index_type": index_type,
        "index_params": options.index_params,
        "search_params": options.search_params.given() if options.search_params else None,
        "query_expansion": getattr(encoder, "query_expansion", None),
        "batch_size": options.batch_size,
        "metrics": list(options.metrics),
        "model_max_length": own,
    }
    per_dataset: dict[str, dict[str, Any]] = {}
    for spec in suite.datasets:
        parts = [REGISTRY[p] for p in spec.parts] if spec.parts else [spec]
        part_results = []
        for part in parts:
            part_out = output / part.name
            lengths = dataset_lengths(options.mode, part, options, own, encoder)
            key = _run_key(manifest, options, index_type, part, lengths)
            previous = _reusable(part_out, key, options.metrics) if options.resume else None
            if previous is not None:
                echo(f"{part.name}: reusing {part_out / SUMMARY_FILE}")
                part_results.append(previous)
                continue
            _apply_lengths(encoder, lengths["used"])
            part_results.append(
                _score_one(part, encoder, options, index_type, lengths, key, manifest, paper_model, part_out, echo)
            )
        entry = part_results[0] if not spec.parts else _mean_of_parts(spec, part_results, output, manifest)
        per_dataset[spec.name] = entry
    summary = {
        "suite": suite.name,
        "suite_source": suite.source,
        "model": options.model,
        "mode": options.mode,
        "manifest": manifest,
        "settings": settings,
        "datasets": per_dataset,
        "paper": compare_with_paper(suite, per_dataset, paper_model, options.mode),
        "timings": {"total_s": round(time.perf_counter() - start, 3)},
    }
    write_json_atomic(output / SUMMARY_FILE, summary)
    return summary


def _score_one(
    spec: DatasetSpec,
    encoder: DenseEncoder | ColBERTEncoder,
    options: SuiteOptions,
    index_type: str,
    lengths: dict[str, Any],
    key: dict[str, Any],
    manifest: dict[str, Any],
    paper_model: str,
    out: Path,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    dataset = load_spec(spec, data_dir=options.data_dir, cache=options.cache)
    echo(f"{spec.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries ({spec.split})")
    start = time.perf_counter()
    retriever = Retriever.build(
        dataset.corpus,
        encoder,
        index_type=index_type,
        index_params=dict(options.index_params),
        batch_size=options.batch_size,
        show_progress=options.show_progress,
        seed=options.seed,
    )
    result = evaluate(
        dataset,
        retriever,
        metrics=options.metrics,
        keep_identical_ids=spec.keep_identical_ids,
        batch_size=options.batch_size,
        search_params=options.search_params,
        manifest=manifest,
    )
    total = time.perf_counter() - start  # encoding, indexing, search and scoring
    result.timings = {**{k: round(v, 3) for k, v in retriever.timings.items()}, "total_s": round(total, 3)}
    result.settings.update(
        {"conventions": spec.conventions(), "lengths": lengths, "paper_model": paper_model, "run_key": key}
    )
    result.dataset = spec.name
    result.save(out)
    if result.settings.get("queries_cut_note"):
        echo(f"{spec.name}: note: {result.settings['queries_cut_note']}")
    if options.save_index:
        retriever.save(out / "index", replace=True)
    entry = _entry(result.to_json())
    ndcg = entry["metrics"].get("ndcg@10")
    echo(f"{spec.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry["metrics"].items()) + _paper_note(
        ndcg, paper_value(paper_model, options.mode, spec.paper_key) if spec.paper_key else None
    ))  # fmt: skip
    return entry


def _paper_note(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None:
        return ""
    return f" (paper {paper:.4f}, {ours - paper:+.4f})"


def _entry(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a dataset's results.json that the suite summary keeps."""
    keys = ("dataset", "split", "metrics", "num_queries", "num_docs", "timings")
    entry = {k: result[k] for k in keys}
    entry["conventions"] = result["settings"].get("conventions")
    entry["lengths"] = result["settings"].get("lengths")
    return entry


def _reusable(out: Path, key: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """A dataset result from an earlier run with the same run key (weights, mode, index, lengths ...)."""
    path = out / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        same = result["settings"]["run_key"] == json.loads(json.dumps(key)) and set(metrics) <= set(result["metrics"])
    except (ValueError, KeyError, TypeError):
        return None
    return _entry(result) if same else None


def _mean_of_parts(
    spec: DatasetSpec, parts: list[dict[str, Any]], output: Path, manifest: dict[str, Any]
) -> dict[str, Any]:
    """A composite (CQADupStack) scores the unweighted mean of its parts, as BEIR reports it."""
    names = list(parts[0]["metrics"])
    entry = {
        "dataset": spec.name,
        "split": spec.split,
        "metrics": {m: sum(p["metrics"][m] for p in parts) / len(parts) for m in names},
        "num_queries": sum(p["num_queries"] for p in parts),
        "num_docs": sum(p["num_docs"] for p in parts),
        "timings": {"total_s": round(sum(p["timings"].get("total_s", 0.0) for p in parts), 3)},
        "conventions": spec.conventions(),
        "parts": {p["dataset"]: p["metrics"] for p in parts},
    }
    write_json_atomic(output / spec.name / SUMMARY_FILE, {**entry, "mode": None, "manifest": manifest})
    return entry


def compare_with_paper(
    suite: Suite, per_dataset: dict[str, dict[str, Any]], paper_model: str, mode: str
) -> dict[str, Any]:
    """Our NDCG@10, the paper's and the difference per dataset, plus the BEIR mean over the same datasets.

    The BEIR mean compares like with like: over the datasets this run scored, with the paper's own
    per-dataset numbers (its printed average when all 15 are there).
    """
    rows = []
    for spec in suite.datasets:
        ours = per_dataset[spec.name]["metrics"].get("ndcg@10")
        paper = paper_value(paper_model, mode, spec.paper_key) if spec.paper_key else None
        rows.append(_row(spec.display, spec.name, ours, paper))
    beir = [s for s in suite.datasets if s.family == "beir" and s.paper_key]
    if len(beir) > 1:
        ours_mean = sum(per_dataset[s.name]["metrics"]["ndcg@10"] for s in beir) / len(beir)
        paper_each = [paper_value(paper_model, mode, s.paper_key) for s in beir if s.paper_key]
        if len(beir) == 15:
            paper_mean = paper_value(paper_model, mode, "beir")
        elif all(p is not None for p in paper_each):
            paper_mean = sum(p for p in paper_each if p is not None) / len(beir)
        else:
            paper_mean = None
        rows.append(_row(f"BEIR mean ({len(beir)})", "beir-mean", ours_mean, paper_mean))
    return {"paper_model": paper_model, "mode": mode, "citation": citation(), "rows": rows}


def _row(display: str, name: str, ours: float | None, paper: float | None) -> dict[str, Any]:
    diff = None if ours is None or paper is None else round(ours - paper, 4)
    return {"dataset": display, "key": name, "ndcg@10": ours, "paper": paper, "diff": diff}


def format_comparison(summary: dict[str, Any]) -> str:
    """The terminal table: our NDCG@10, the paper's, the difference."""
    paper = summary["paper"]
    header = ["dataset", "ndcg@10", f"paper ({paper['paper_model']}, {paper['mode']})", "diff"]
    body = [
        [
            row["dataset"],
            _fmt(row["ndcg@10"]),
            _fmt(row["paper"]),
            "" if row["diff"] is None else f"{row['diff']:+.4f}",
        ]
        for row in paper["rows"]
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def check_output(output: Path | None) -> Path:
    if output is None:
        raise ParameterError("output", "required with a suite (one results directory per dataset goes under it)")
    return output
