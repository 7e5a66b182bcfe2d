"""PLAID's files. A directory holds the codec (`centroids.npy`; `codebook.npy`, the residual codebooks, or
the scalar buckets' values beside their `bucket_cutoffs.npy`, see `codec.py`; indexes written before name
that file's role `bucket_weights`),
one set of files per chunk (`ROLE-CCCCC.npy` for each array of `Chunk`, and `doc_ids-CCCCC.json`, the
chunk's doc ids), and the current generation's tombstones (`deleted-GGGGGG.npy`, the deleted documents'
numbers). A chunk's files are written once; a save writes the chunks added since the last one, the
tombstones and the manifest, which `save_generation` swaps in as the commit point. So adding or deleting a
document writes O(chunk + deleted + manifest) bytes, whatever the size of the index.

Indexes written before chunks carried their lists (one `doc_ids-GGGGGG.json` with every id, no norms or
inverted lists) still load: their lists are computed in memory, and the next save rewrites the directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mbret.errors import IndexFormatError, MbretError
from mbret.indexes.plaid.codec import ResidualCodec
from mbret.indexes.plaid.ivf import CHUNK_ARRAYS, Chunk, make_chunk
from mbret.io import atomic_file, load_npy, save_npy

CODEC_FILES = {"centroids": "centroids", "bucket_cutoffs": "cutoffs", "codebook": "weights"}  # role: attribute
OLD_ROLES = {"codebook": "bucket_weights"}  # the role's name in indexes written before it held codebooks


def chunk_names(c: int) -> dict[str, str]:
    """Manifest roles -> file names of chunk `c`."""
    names = {f"{role}_{c}": f"{role}-{c:05d}.npy" for role in CHUNK_ARRAYS}
    names[f"doc_ids_{c}"] = f"doc_ids-{c:05d}.json"
    return names


def write_codec(directory: Path, codec: ResidualCodec, fresh: bool) -> dict[str, str]:
    names = {}
    for role, attribute in CODEC_FILES.items():
        names[role] = f"{role}.npy"
        if fresh or not (directory / names[role]).is_file():
            save_npy(directory / names[role], getattr(codec, attribute).cpu().numpy())
    return names


def write_chunk(directory: Path, c: int, chunk: Chunk, doc_ids: Sequence[str | None]) -> None:
    names = chunk_names(c)
    for role, array in chunk.arrays().items():
        save_npy(directory / names[f"{role}_{c}"], array)
    with atomic_file(directory / names[f"doc_ids_{c}"]) as fh:
        json.dump(list(doc_ids), fh)


def link_chunk(directory: Path, c: int, arrays: dict[str, Path], doc_ids: Sequence[str | None]) -> None:
    """Chunk `c` from array files written before (a part of a distributed build): hard-linked in, O(1)
    whatever their size, or copied where the filesystem has no links; its doc ids written."""
    import contextlib
    import os
    import shutil

    names = chunk_names(c)
    for role, source in arrays.items():
        target = directory / names[f"{role}_{c}"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)  # what a killed commit left
        try:
            os.link(source, target)
        except OSError:
            with atomic_file(target, "wb") as fh, open(source, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 24)
    with atomic_file(directory / names[f"doc_ids_{c}"]) as fh:
        json.dump(list(doc_ids), fh)


def check_chunk(
    chunk: Chunk, where: Path, row_bytes: int, num_centroids: int, num_docs: int, label: str = "the part"
) -> None:
    """Refuse a chunk whose arrays do not fit one another, its documents and the codec."""
    tokens = int(np.asarray(chunk.doclens).sum())
    if not (len(chunk.codes) == len(chunk.residuals) == len(chunk.norms) == tokens):
        raise IndexFormatError(
            f"{where}: {label} holds {len(chunk.codes)} codes, {len(chunk.residuals)} residuals, "
            f"{len(chunk.norms)} norms and {tokens} tokens by its doclens"
        )
    if chunk.residuals.ndim != 2 or chunk.residuals.shape[1] != row_bytes:
        raise IndexFormatError(f"{where}: {label}'s residuals have shape {chunk.residuals.shape}, not (n, {row_bytes})")
    if len(chunk.doc_code_offsets) != chunk.num_docs + 1 or len(chunk.ivf_offsets) != num_centroids + 1:
        raise IndexFormatError(f"{where}: {label}'s lists do not fit its documents and {num_centroids} centroids")
    if chunk.num_docs != num_docs:
        raise IndexFormatError(f"{where}: {chunk.num_docs} documents for {num_docs} doc ids")


def write_tombstones(directory: Path, gen: int, deleted: np.ndarray) -> dict[str, str]:
    if not len(deleted):
        return {}
    name = f"deleted-{gen:06d}.npy"
    save_npy(directory / name, deleted.astype(np.int64))
    return {"deleted": name}


def read_codec(files: dict[str, Path], nbits: int, avg_residual: float) -> ResidualCodec:
    import torch

    paths = [files[role] if role in files else files[OLD_ROLES.get(role, role)] for role in CODEC_FILES]
    arrays = [torch.from_numpy(load_npy(path, None)) for path in paths]
    try:
        return ResidualCodec(*arrays, nbits, avg_residual)
    except MbretError as exc:
        raise IndexFormatError(f"{paths[-1]}: {exc}") from None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise IndexFormatError(f"{path}: truncated or corrupt doc id file ({exc})") from None


def read_chunks(
    files: dict[str, Path], codec: ResidualCodec, row_bytes: int, mmap: bool
) -> tuple[list[Chunk], list[str | None]]:
    """Every chunk of a directory (memory-mapped unless `mmap=False`) and the doc ids, tombstones applied."""
    mode = "r" if mmap else None
    num_centroids = len(codec.centroids)
    chunks: list[Chunk] = []
    doc_ids: list[str | None] = []
    for c in range(sum(1 for role in files if role.startswith("codes_"))):
        arrays = {role: load_npy(files[f"{role}_{c}"], None if role == "doclens" else mode) for role in CHUNK_ARRAYS}
        chunk = Chunk(**arrays)
        ids = _read_json(files[f"doc_ids_{c}"])
        if not isinstance(ids, list) or len(ids) != chunk.num_docs:
            raise IndexFormatError(f"{files[f'doc_ids_{c}']}: not a list of the chunk's {chunk.num_docs} doc ids")
        check_chunk(chunk, files[f"codes_{c}"], row_bytes, num_centroids, len(ids), label=f"chunk {c}")
        chunks.append(chunk)
        doc_ids.extend(ids)
    if "deleted" in files:
        deleted = load_npy(files["deleted"], None)
        if len(deleted) and (deleted.min() < 0 or deleted.max() >= len(doc_ids)):
            raise IndexFormatError(f"{files['deleted']}: deleted document numbers out of range")
        for i in deleted.tolist():
            doc_ids[i] = None
    return chunks, doc_ids


def read_legacy_chunks(
    files: dict[str, Path], codec: ResidualCodec, row_bytes: int, mmap: bool
) -> tuple[list[Chunk], list[str | None]]:
    """An index from before chunks stored their lists: the lists and norms are computed here (and the
    codec's `avg_residual`, which that layout kept beside the ids, is set)."""
    meta = _read_json(files["doc_ids"])
    try:
        doc_ids, avg_residual = meta["doc_ids"], float(meta["avg_residual"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"{files['doc_ids']}: truncated or corrupt doc id file") from None
    codec.avg_residual = avg_residual
    chunks = []
    for c in range(sum(1 for role in files if role.startswith("codes_"))):
        codes = load_npy(files[f"codes_{c}"], None)
        residuals = load_npy(files[f"residuals_{c}"], "r" if mmap else None)
        doclens = load_npy(files[f"doclens_{c}"], None)
        if len(codes) != len(residuals) or int(doclens.sum()) != len(codes):
            raise IndexFormatError(
                f"{files[f'codes_{c}']}: chunk {c} holds {len(codes)} codes, "
                f"{len(residuals)} residuals and {int(doclens.sum())} tokens by its doclens"
            )
        if residuals.ndim != 2 or residuals.shape[1] != row_bytes:
            raise IndexFormatError(f"{files[f'residuals_{c}']}: shape {residuals.shape}, not (n, {row_bytes})")
        chunks.append(make_chunk(codes, residuals, doclens, codec))
    return chunks, doc_ids
