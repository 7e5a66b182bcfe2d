"""Parts: what one process of a distributed build writes for its shard of the corpus, for the process that
commits to take into an index (`add_parts` on every index class).

A part is a directory: its arrays (`NAME.npy`: a PLAID chunk's arrays, a FAISS index's `vectors`, an exact
index's `tokens` and `doclens`), its doc ids (`doc_ids.json`), its documents' rows (`documents.sqlite`,
`DocumentStore.export`) and, written last, `part.json`, whose presence says the part is complete: a
process killed while writing one leaves a directory without it, which a resumed build writes again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mbret.errors import IndexFormatError
from mbret.indexes.store import DocumentStore
from mbret.io import atomic_file, load_npy, save_npy, write_json_atomic

PART_FILE = "part.json"
DOCUMENTS_FILE = "documents.sqlite"


@dataclass(frozen=True)
class Part:
    """A complete part, as read back (`read_part`)."""

    directory: Path
    doc_ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def documents(self) -> Path:
        return self.directory / DOCUMENTS_FILE

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        return load_npy(self.directory / f"{name}.npy", "r" if mmap else None)

    def array_path(self, name: str) -> Path:
        return self.directory / f"{name}.npy"


def is_complete(directory: Path) -> bool:
    return (Path(directory) / PART_FILE).is_file()


def write_part(
    directory: Path,
    doc_ids: Sequence[str],
    store: DocumentStore,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write a part: arrays, doc ids and document rows first, each fsynced, then `part.json`."""
    directory = Path(directory)
    if directory.exists():  # what a killed writer left
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, array in arrays.items():
        save_npy(directory / f"{name}.npy", array)
    with atomic_file(directory / "doc_ids.json") as fh:
        json.dump(list(doc_ids), fh)
    store.export(directory / DOCUMENTS_FILE)
    write_json_atomic(directory / PART_FILE, {"num_docs": len(doc_ids), **(meta or {})})


def read_part(directory: Path) -> Part:
    directory = Path(directory)
    try:
        meta = json.loads((directory / PART_FILE).read_text(encoding="utf-8"))
        doc_ids = json.loads((directory / "doc_ids.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{directory}: not a complete part (no {PART_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{directory}: corrupt part ({exc})") from None
    if not isinstance(doc_ids, list) or len(doc_ids) != meta.get("num_docs"):
        raise IndexFormatError(f"{directory / 'doc_ids.json'}: not the part's {meta.get('num_docs')} doc ids")
    return Part(directory, doc_ids, meta)
