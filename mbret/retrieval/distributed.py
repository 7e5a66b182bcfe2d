"""Index builds across processes, GPUs and nodes under `torchrun` (`build_sharded`).

    torchrun --nnodes N --nproc-per-node G -m mbret index CORPUS --model M --mode colbert --out DIR

The corpus file is cut into one shard per rank by byte ranges at line starts (`byte_spans`), so each rank
reads only its own lines. Every rank encodes its shard on its own device and writes it as a part (vectors,
doc ids, document rows; `mbret.indexes.parts`) into DIR's staging area, `.DIR.staging/` beside it (beside,
as DIR's lock is: a new DIR is made whole at the commit). Rank 0 then commits one generation, atomically,
under DIR's lock: a killed rank leaves the previous index as it was, and a rerun with `--resume` skips the
parts already written.

PLAID trains its codec once, the way a single process does: the same seeded probe sizes the same seeded
sample of whole documents (`Retriever._training_sample`); each rank encodes the sampled documents it holds,
rank 0 gathers them in corpus order, runs k-means (on its GPU when FAISS has one) and broadcasts the codec,
and every rank compresses its own shard with it. Rank 0's commit links the parts' chunk files into DIR, so
nothing is decompressed, merged or copied. FAISS indexes (flat, hnsw, ivfpq) and exact MaxSim ones are
assembled by rank 0 from the parts' vectors in one add, as a single process would.

Same seed, same result: doc ids in corpus order, the same sample, the same centroids and residual codebooks
for the same vectors; only the encoder's numerics (documents batched with other neighbours) differ.

Stanford ColBERT's launcher is single-node and has rank 0 build the inverted lists from all codes in one
tensor; here each rank's part carries its own lists (a chunk), so no rank ever holds the whole corpus.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mbret
from mbret.data.datasets import ByteSpan, Corpus, byte_spans, doc_text, load_corpus, load_corpus_jsonl
from mbret.distributed import (
    World,
    agree,
    all_gather_json,
    barrier,
    broadcast_tensors,
    gather_rows,
    node_threads,
)
from mbret.errors import MbretError
from mbret.hardware import cpu_threads
from mbret.indexes import DocumentStore, new_index
from mbret.indexes.parts import is_complete, write_part
from mbret.indexes.plaid import PlaidIndex
from mbret.indexes.plaid.codec import ResidualCodec
from mbret.io import index_lock, load_npy, save_npy, write_json_atomic
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.retriever import CHUNK_DOCS, Retriever, check_new_out

STAGING_VERSION = 1
CODEC_ARRAYS = ("centroids", "cutoffs", "weights")


def staging_dir(out: str | Path) -> Path:
    """The staging area of index directory `out`: `.NAME.staging` beside it."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.staging"


@dataclass
class BuildReport:
    """What a sharded build did: documents, shards (and those a `--resume` found written), and each
    rank's seconds per phase and peak RSS (on rank 0, every rank's; elsewhere its own)."""

    num_docs: int
    num_shards: int
    skipped_shards: list[int]
    world_size: int
    seconds: float
    ranks: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "num_docs": self.num_docs,
            "num_shards": self.num_shards,
            "skipped_shards": self.skipped_shards,
            "world_size": self.world_size,
            "seconds": round(self.seconds, 3),
            "ranks": self.ranks,
        }


class _Phases:
    """Seconds per phase of one rank."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._start, 3)
        self._start = now


def _corpus_file(source: str) -> Path | None:
    """The JSONL file a corpus source names (a file or a BEIR directory); None for a dataset id."""
    if source.startswith(("irds:", "hf:")):
        return None
    path = Path(source)
    return path / "corpus.jsonl" if path.is_dir() else path


def _fingerprint(source: str) -> dict[str, Any]:
    file = _corpus_file(source)
    if file is None or not file.is_file():
        return {"source": source}
    stat = file.stat()
    return {"source": str(file.absolute()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_shards(source: str, shards: Sequence[int], num_shards: int) -> dict[int, Corpus]:
    """This rank's shards of the corpus: byte ranges of the file, or slices of a dataset id's corpus (which
    `ir_datasets`/`datasets` give whole, so each rank loads it)."""
    file = _corpus_file(source)
    if file is not None:
        spans: list[ByteSpan] = byte_spans(file, num_shards)
        return {s: load_corpus_jsonl(file, span=spans[s]) for s in shards}
    corpus = load_corpus(source)
    ids = list(corpus)
    bounds = [len(ids) * i // num_shards for i in range(num_shards + 1)]
    return {s: {d: corpus[d] for d in ids[bounds[s] : bounds[s + 1]]} for s in shards}


def _first_error(action: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return action(), None
    except MbretError as exc:
        return None, str(exc)


def _duplicate_line(file: Path | None, doc_id: str) -> str:
    """Where a doc id repeated across shards appears, for the error (read again only on that path)."""
    if file is None:
        return ""
    from mbret.data.datasets import iter_jsonl

    lines = [n for n, obj in iter_jsonl(file) if str(obj.get("_id")) == doc_id][:2]
    return f" (lines {lines[0]} and {lines[1]})" if len(lines) == 2 else ""


def build_sharded(
    source: str,
    out: str | Path,
    world: World,
    encoder: DenseEncoder | ColBERTEncoder,
    *,
    index_type: str,
    index_params: dict[str, Any] | None = None,
    base: Retriever | None = None,
    batch_size: int = 64,
    store_text: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    recluster: bool = False,
    show_progress: bool = True,
) -> BuildReport:
    """Build the index of corpus `source` at `out` on the `world.size` processes of a torchrun job (every
    rank calls this with its own encoder), or add the corpus to `base`, the index loaded from `out`. One
    process (a `World()`) works the same way, over the shards a staging area already holds when resuming.
    Rank 0 commits; every rank returns when the commit is done, or raises the same error."""
    out = Path(out)
    started = time.perf_counter()
    phases = _Phases()
    mode = "colbert" if isinstance(encoder, ColBERTEncoder) else "dense"
    index_params = dict(index_params or {})
    stage = staging_dir(out)
    settings = {
        "staging_version": STAGING_VERSION,
        "corpus": _fingerprint(source),
        "model": encoder.name,
        "mode": mode,
        "index_type": index_type,
        "index_params": index_params,
        "store_text": store_text,
        "add": base is not None,
        "base": None if base is None else base.index.generation,
    }

    # 1. the staging area: new, or the one a killed build left (--resume with the same settings)
    def prepare() -> dict[str, Any]:
        if base is None:
            check_new_out(out, overwrite)
        build_file = stage / "build.json"
        if resume and build_file.is_file():
            build = json.loads(build_file.read_text(encoding="utf-8"))
            if build.get("settings") != settings:
                raise MbretError(
                    f"{stage}: the staging area holds a build with other settings (corpus, model, index or "
                    "base generation); rerun without resume to start over"
                )
            return build
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        build = {"settings": settings, "num_shards": world.size, "mbret_version": mbret.__version__}
        write_json_atomic(build_file, build)
        return build

    build, error = _first_error(prepare) if world.is_main else (None, None)
    agree(world, error)
    build = all_gather_json(world, build)[0]
    num_shards = int(build["num_shards"])
    mine = [s for s in range(num_shards) if s % world.size == world.rank]
    part_dirs = [stage / f"shard-{s:05d}" for s in range(num_shards)]
    todo = [s for s in mine if not (resume and is_complete(part_dirs[s]))]
    phases.mark("prepare_s")

    # 2. read this rank's shards: every line checked, and ids unique across shards and new to `base`
    shards, error = _first_error(lambda: _read_shards(source, mine, num_shards))
    agree(world, error)
    if base is not None:
        clash = next((d for c in shards.values() for d in c if d in base.index), None)
        agree(world, f"doc id {clash!r} is already in {out} (delete it first to replace it)" if clash else None)
    counts = [0] * num_shards
    for per_rank in all_gather_json(world, {str(s): len(c) for s, c in shards.items()}):
        for s, n in per_rank.items():
            counts[int(s)] = n
    total = sum(counts)
    agree(world, f"{source}: corpus is empty" if not total else None)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if world.size > 1:
        seen: set[str] = set()
        duplicate = None
        for per_rank in all_gather_json(world, {str(s): list(c) for s, c in shards.items()}):
            for s in sorted(per_rank, key=int):
                duplicate = duplicate or next((d for d in per_rank[s] if d in seen), None)
                seen.update(per_rank[s])
        del seen
        message = None
        if duplicate is not None:
            message = f"{source}: duplicate doc id {duplicate!r}{_duplicate_line(_corpus_file(source), duplicate)}"
        agree(world, message)
    phases.mark("read_s")

    # 3. PLAID's codec: trained once on rank 0 from a sample drawn from every shard, then broadcast
    codec: ResidualCodec | None = None
    reuse: dict[int, dict[int, torch.Tensor]] = {}
    if index_type == "plaid":
        if base is not None:
            assert isinstance(base.index, PlaidIndex) and base.index.codec is not None
            codec = base.index.codec
        else:
            codec, reuse = _shared_codec(
                world, encoder, shards, offsets, total, index_params, stage, batch_size, phases
            )

    # 4. this rank's parts
    for s in todo:
        _write_shard_part(
            part_dirs[s],
            encoder,
            shards[s],
            index_type,
            index_params,
            codec,
            reuse.get(s),
            batch_size,
            store_text,
            show_progress and world.is_main,
        )
    del shards, reuse
    phases.mark("encode_s")
    skipped = sorted(set(range(num_shards)) - set(s for ranks in all_gather_json(world, todo) for s in ranks))
    barrier(world)
    phases.mark("wait_s")

    # 5. the commit, on rank 0, under the directory's lock
    def commit() -> None:
        with index_lock(out):
            if base is not None:
                base.index.refresh()  # on top of whatever others committed since this build began
                base.index.add_parts(part_dirs)
                if recluster:
                    base.recluster()
                base.save(out)
            else:
                index = new_index(mode, index_type, encoder.dimension, index_params)
                index.documents.store_text = store_text
                if codec is not None:
                    index.use_codec(codec)  # type: ignore[attr-defined]
                index.add_parts(part_dirs)  # type: ignore[attr-defined]
                Retriever(encoder=encoder, index=index, batch_size=batch_size).save(out, replace=overwrite)
        shutil.rmtree(stage, ignore_errors=True)

    error = _first_error(commit)[1] if world.is_main else None
    agree(world, error)
    phases.mark("commit_s")
    mine_report = {
        "rank": world.rank,
        "device": world.device or str(encoder.device),
        "shards": mine,
        "docs": int(sum(counts[s] for s in mine)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **phases.seconds,
    }
    return BuildReport(
        num_docs=total,
        num_shards=num_shards,
        skipped_shards=skipped,
        world_size=world.size,
        seconds=time.perf_counter() - started,
        ranks=all_gather_json(world, mine_report),
    )


def _shared_codec(
    world: World,
    encoder: DenseEncoder | ColBERTEncoder,
    shards: dict[int, Corpus],
    offsets: np.ndarray,
    total: int,
    index_params: dict[str, Any],
    stage: Path,
    batch_size: int,
    phases: _Phases,
) -> tuple[ResidualCodec, dict[int, dict[int, torch.Tensor]]]:
    """The codec of a new PLAID build: the staged one (a resumed build), else trained on rank 0 from the
    seeded sample a single process would draw; each rank's encoded sample documents come back for reuse."""
    assert isinstance(encoder, ColBERTEncoder)
    codec_dir = stage / "codec"
    staged = all_gather_json(world, (codec_dir / "codec.json").is_file() if world.is_main else None)[0]
    reuse: dict[int, dict[int, torch.Tensor]] = {}
    trainer = new_index("colbert", "plaid", encoder.dimension, index_params)
    assert isinstance(trainer, PlaidIndex)
    texts = {s: [doc_text(d) for d in corpus.values()] for s, corpus in shards.items()}
    if staged:
        tensors = None
        if world.is_main:
            meta = json.loads((codec_dir / "codec.json").read_text(encoding="utf-8"))
            arrays = [torch.from_numpy(load_npy(codec_dir / f"{name}.npy", None)) for name in CODEC_ARRAYS]
            tensors = [*arrays, torch.tensor([meta["avg_residual"]], dtype=torch.float64)]
        centroids, cutoffs, weights, avg = broadcast_tensors(world, tensors)
        phases.mark("kmeans_s")
        return ResidualCodec(centroids, cutoffs, weights, trainer.nbits, float(avg[0])), reuse

    def local(global_rows: np.ndarray) -> dict[int, list[int]]:
        """Rows of this rank's shards among ascending global document numbers, by shard."""
        picked = {}
        for s in shards:
            inside = global_rows[(global_rows >= offsets[s]) & (global_rows < offsets[s + 1])]
            picked[s] = (inside - offsets[s]).tolist()
        return picked

    # the probe that sizes the sample, and the sample: `Retriever._training_sample`, over all shards
    probe = np.sort(np.random.default_rng(trainer.seed).choice(total, size=min(total, 256), replace=False))
    counted = sum(encoder.count_tokens([texts[s][i] for i in rows]) for s, rows in local(probe).items() if rows)
    tokens_per_doc = sum(all_gather_json(world, counted)) / max(len(probe), 1)
    sample = trainer.sample_documents(total, tokens_per_doc)
    pieces, sizes = [], []
    for s, rows in sorted(local(sample).items()):
        encoded = (
            encoder.encode_corpus(
                [texts[s][i] for i in rows], batch_size=batch_size, show_progress=False, dtype=torch.float16
            )
            if rows
            else []
        )
        reuse[s] = dict(zip(rows, encoded))
        pieces.extend(encoded)
        sizes.append([s, int(sum(len(e) for e in encoded))])
    mine = torch.cat(pieces) if pieces else torch.zeros(0, encoder.dimension, dtype=torch.float16)
    phases.mark("sample_s")
    gathered = gather_rows(world, mine)
    layout = all_gather_json(world, sizes)
    phases.mark("gather_s")
    tensors = None
    if world.is_main:
        assert gathered is not None
        by_shard = {}
        for rows, per_rank in zip(gathered, layout):
            for (s, _), piece in zip(per_rank, torch.split(rows, [n for _, n in per_rank])):
                by_shard[s] = piece
        vectors = torch.cat([by_shard[s] for s in sorted(by_shard)])
        with cpu_threads(node_threads(world)):  # the node's other ranks wait for the codec: their cores train it
            trainer.train(vectors, num_tokens=int(len(vectors) * total / max(len(sample), 1)))
        codec = trainer.codec
        assert codec is not None
        codec_dir.mkdir(parents=True, exist_ok=True)
        for name in CODEC_ARRAYS:
            save_npy(codec_dir / f"{name}.npy", getattr(codec, name).numpy())
        write_json_atomic(codec_dir / "codec.json", {"avg_residual": codec.avg_residual})
        tensors = [
            codec.centroids,
            codec.cutoffs,
            codec.weights,
            torch.tensor([codec.avg_residual], dtype=torch.float64),
        ]
        del vectors, by_shard
    del gathered
    centroids, cutoffs, weights, avg = broadcast_tensors(world, tensors)
    phases.mark("kmeans_s")  # rank 0 trains; the others wait for the codec
    return ResidualCodec(centroids, cutoffs, weights, trainer.nbits, float(avg[0])), reuse


def _write_shard_part(
    directory: Path,
    encoder: DenseEncoder | ColBERTEncoder,
    corpus: Corpus,
    index_type: str,
    index_params: dict[str, Any],
    codec: ResidualCodec | None,
    reuse: dict[int, torch.Tensor] | None,
    batch_size: int,
    store_text: bool,
    show_progress: bool,
) -> None:
    """Encode one shard and write it as a part: PLAID compresses it with the shared codec; FAISS and exact
    indexes keep its vectors for rank 0 to add."""
    doc_ids = list(corpus)
    if index_type == "plaid":
        assert codec is not None
        index = new_index("colbert", "plaid", encoder.dimension, index_params)
        assert isinstance(index, PlaidIndex)
        index.use_codec(codec)
        index.documents.store_text = store_text
        Retriever(encoder=encoder, index=index, batch_size=batch_size).add(
            corpus, show_progress=show_progress, encoded=reuse
        )
        index.write_part(directory)
        return
    store = DocumentStore(store_text=store_text)
    store.add_rows(0, store.rows(doc_ids, list(corpus.values())))
    texts = [doc_text(d) for d in corpus.values()]
    if isinstance(encoder, ColBERTEncoder):  # exact MaxSim: float16 token vectors, as the index keeps them
        encoded: list[torch.Tensor] = []
        for begin in range(0, len(texts), CHUNK_DOCS):
            encoded += encoder.encode_corpus(
                texts[begin : begin + CHUNK_DOCS], batch_size=batch_size, show_progress=False, dtype=torch.float16
            )
        tokens = torch.cat(encoded).numpy() if encoded else np.zeros((0, encoder.dimension), dtype=np.float16)
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        write_part(directory, doc_ids, store, {"tokens": tokens, "doclens": lengths})
        return
    vectors = encoder.encode_corpus(texts, batch_size=batch_size, show_progress=show_progress)
    write_part(directory, doc_ids, store, {"vectors": vectors})


__all__ = ["BuildReport", "build_sharded", "staging_dir"]
