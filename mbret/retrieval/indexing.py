"""Writing index directories: build one from a corpus, add a corpus to one (in one process or on the ranks of
a torchrun job), delete documents, compact. What `mbret index`, `mbret delete` and `mbret compact` do, as one
call each, with every decision about which path to take made here rather than in the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import ParameterError
from mbret.io import index_lock, write_json_atomic
from mbret.types import SearchParams

# The SearchParams fields each index type reads: given at build time, they become the index's defaults.
SEARCH_SETTINGS_BY_INDEX_TYPE = {
    "plaid": ("n_ivf_probe", "centroid_score_threshold", "n_candidates", "n_full_scores"),
    "ivfpq": ("nprobe",),
    "hnsw": ("ef_search",),
}


@dataclass(frozen=True)
class IndexReport:
    """What an index call did. `is_main` is False on the ranks of a torchrun job other than 0 (which report
    nothing: rank 0 speaks for the job)."""

    output: Path
    added: bool
    num_docs: int  # documents this call wrote
    total_docs: int  # documents in the index afterwards
    index_type: str
    seconds: float
    shape: str | None = None  # "384-d" or "12,345 terms" (one process builds only)
    drift: float | None = None
    reclustered: bool = False
    world_size: int = 1
    skipped_shards: int | None = None  # resumed builds: shards a killed run had written
    num_shards: int | None = None
    is_main: bool = True
    timings: dict[str, float] = field(default_factory=dict)


def parse_index_param(items: list[str] | None) -> dict[str, int | float | str]:
    """KEY=VALUE texts as a dict, each value an int or float where it reads as one, else the text."""
    params: dict[str, int | float | str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParameterError("index_params", f"{item!r}: use KEY=VALUE, e.g. nlist=1024")
        for cast in (int, float):
            try:
                params[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key] = value
    return params


def build_index_params(
    index_type: str,
    index_params: list[str] | None = None,
    nbits: int = 2,
    search_params: SearchParams | None = None,
) -> dict[str, int | float | str]:
    """The `index_params` of a build: KEY=VALUE texts, PLAID's `nbits`, and the search settings that become
    the index's defaults (each only for the index type that reads it)."""
    params = parse_index_param(index_params)
    if index_type == "plaid":
        params.setdefault("nbits", nbits)
    applies = SEARCH_SETTINGS_BY_INDEX_TYPE.get(index_type, ())
    for name, value in (search_params.given() if search_params is not None else {}).items():
        if name not in applies:
            readers = [t for t, names in SEARCH_SETTINGS_BY_INDEX_TYPE.items() if name in names]
            raise ParameterError(name, f"sets {' and '.join(readers)} searches, not a {index_type} index's")
        params[name] = value
    return params


def index_corpus(
    corpus: str,
    output: Path,
    *,
    model: str | None = None,
    mode: str = "dense",
    index_type: str | None = None,
    batch_size: int = 64,
    query_length: int | None = None,
    query_expansion: bool | None = None,
    document_length: int | None = None,
    pool_factor: int | None = None,
    nbits: int = 2,
    search_params: SearchParams | None = None,
    index_params: list[str] | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    add: bool = False,
    recluster: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    report: Path | None = None,
    store_text: bool = True,
) -> IndexReport:
    """Encode `corpus` into a new index at `output`, or with `add` into the index there. Under torchrun (or
    with `resume`) every rank encodes its shard and rank 0 commits (`mbret.retrieval.distributed`).
    `report`: a JSON file of the build's seconds per phase and peak memory."""
    from mbret.distributed import launched
    from mbret.retrieval.retriever import check_mode

    output = Path(output)
    index_type = check_mode(mode, index_type)
    if recluster and not add:
        raise ParameterError("recluster", "applies when adding to an index (a new index is clustered on its corpus)")
    settings = dict(
        model=model, mode=mode, index_type=index_type, batch_size=batch_size, query_length=query_length,
        query_expansion=query_expansion, document_length=document_length, pool_factor=pool_factor,
        index_params=build_index_params(index_type, index_params, nbits, search_params), query_prompt=query_prompt,
        document_prompt=document_prompt, device=device, dtype=dtype, recluster=recluster, overwrite=overwrite,
        report=report, store_text=store_text,
    )  # fmt: skip
    if launched() or resume:
        return _index_sharded(corpus, output, add=add, resume=resume, **settings)  # type: ignore[arg-type]
    if add:
        return _add(corpus, output, **settings)  # type: ignore[arg-type]
    return _build(corpus, output, **settings)  # type: ignore[arg-type]


def _encoder(model: str | None, mode: str, **settings: Any) -> Any:
    from mbret.retrieval.retriever import load_encoder

    keys = ("device", "dtype", "query_length", "document_length", "query_prompt", "document_prompt",
            "query_expansion", "pool_factor")  # fmt: skip
    return load_encoder(model, mode, **{k: settings[k] for k in keys})


def _load(output: Path, model: str | None, **settings: Any) -> Any:
    from mbret.retrieval import Retriever

    keys = ("device", "dtype", "batch_size", "query_expansion", "query_length")
    return Retriever.load(output, model=model, **{k: settings[k] for k in keys})


def _build(corpus: str, output: Path, **settings: Any) -> IndexReport:
    from mbret.data.datasets import load_corpus
    from mbret.retrieval import Retriever
    from mbret.retrieval.retriever import check_new_out

    docs = load_corpus(corpus)  # validated in full before anything is written
    if settings["model"] is None and settings["mode"] != "bm25":
        raise ParameterError("model", "required to build a new index (e.g. minilm)")
    check_new_out(output, settings["overwrite"])
    encoder = _encoder(**settings)
    retriever = Retriever.build(
        docs, encoder, index_type=settings["index_type"], index_params=settings["index_params"],
        batch_size=settings["batch_size"], store_text=settings["store_text"],
    )  # fmt: skip
    retriever.save(output, replace=settings["overwrite"])
    timings = dict(retriever.timings)
    if settings["report"] is not None:
        write_json_atomic(settings["report"], {"num_docs": len(retriever.index), "world_size": 1, "ranks": [timings]})
    shape = f"{encoder.dimension}-d" if encoder.dimension else f"{retriever.index.num_terms:,} terms"
    return IndexReport(
        output, False, len(retriever.index), len(retriever.index), settings["index_type"],
        timings["encode_corpus_s"] + timings["index_build_s"], shape=shape, timings=timings,
    )  # fmt: skip


def _add(corpus: str, output: Path, **settings: Any) -> IndexReport:
    from mbret.data.datasets import load_corpus

    docs = load_corpus(corpus)  # validated in full before anything is written
    pool_factor = settings["pool_factor"]
    with index_lock(output):  # held from load to save: concurrent writers queue, none loses another's change
        retriever = _load(output, **settings)
        if pool_factor is not None and retriever.mode != "colbert":
            raise ParameterError("pool_factor", "applies to mode colbert (documents' token vectors)")
        built_with = getattr(retriever.encoder, "pool_factor", 1)
        if pool_factor is not None and pool_factor != built_with:
            raise ParameterError(
                "pool_factor", f"{pool_factor}: {output} pools documents by {built_with}; added ones pool as it does"
            )
        retriever.add(docs)
        if settings["recluster"]:
            retriever.recluster()
        retriever.save(output)
    timings = dict(retriever.timings)
    return IndexReport(
        output, True, len(docs), len(retriever.index), retriever.index.index_type,
        sum(timings.values()), drift=getattr(retriever.index, "drift", None), reclustered=settings["recluster"],
        timings=timings,
    )  # fmt: skip


def _index_sharded(corpus: str, output: Path, *, add: bool, resume: bool, **settings: Any) -> IndexReport:
    """`index_corpus` on the ranks of a torchrun job (or resuming one in a single process)."""
    from mbret.distributed import join, leave
    from mbret.indexes.base import read_manifest
    from mbret.retrieval.distributed import build_sharded

    if settings["mode"] == "bm25" or (
        add and (output / "manifest.json").is_file() and read_manifest(output).mode == "bm25"
    ):
        raise ParameterError("mode", "bm25 builds in one process: index without torchrun or resume")
    if settings["model"] is None and not add:
        raise ParameterError("model", "required to build a new index (e.g. minilm)")
    index_type, params, store_text = settings["index_type"], settings["index_params"], settings["store_text"]
    world = join(settings["device"])
    try:
        base = _load(output, **{**settings, "device": world.device}) if add else None
        encoder = base.encoder if base is not None else _encoder(**{**settings, "device": world.device})
        if base is not None:
            index_type, params, store_text = base.index.index_type, {}, base.index.documents.store_text
        result = build_sharded(
            corpus, output, world, encoder, index_type=index_type, index_params=params, base=base,
            batch_size=settings["batch_size"], store_text=store_text, overwrite=settings["overwrite"],
            resume=resume, recluster=settings["recluster"],
        )  # fmt: skip
    finally:
        leave(world)
    if world.is_main and settings["report"] is not None:
        write_json_atomic(settings["report"], result.to_json())
    return IndexReport(
        output, add, result.num_docs, result.num_docs, index_type, result.seconds, reclustered=settings["recluster"],
        world_size=result.world_size, skipped_shards=len(result.skipped_shards) if resume else None,
        num_shards=result.num_shards, is_main=world.is_main,
    )  # fmt: skip


def delete_documents(index_dir: Path, doc_ids: list[str]) -> tuple[int, int]:
    """Delete documents by id (every other keeps its id); returns (deleted, left)."""
    from mbret.indexes import load_index

    with index_lock(index_dir):  # held from load to save, so concurrent deletes all persist
        index, manifest = load_index(index_dir)
        removed = index.delete(doc_ids)
        index.save(index_dir, manifest)
    return removed, len(index)


@dataclass(frozen=True)
class CompactReport:
    freed: int  # token vectors (or, for bm25, deleted documents' slots) dropped
    unit: str  # what `freed` counts
    num_docs: int


def compact_index(index_dir: Path) -> CompactReport:
    """Free the space of deleted documents (plaid, exact, bm25); doc ids keep their meaning."""
    from mbret.indexes import load_index

    with index_lock(index_dir):
        index, manifest = load_index(index_dir)
        if not hasattr(index, "compact"):
            raise ParameterError("index_dir", f"{index_dir}: FAISS indexes drop vectors on delete; nothing to compact")
        freed = index.compact()
        index.save(index_dir, manifest, replace=True)
    unit = "deleted documents' slots dropped" if manifest.kind == "bm25" else "token vectors freed"
    return CompactReport(freed, unit, len(index))
