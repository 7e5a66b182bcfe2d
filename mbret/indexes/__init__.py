"""Indexes behind one small interface: `add`, `delete`, `search`, `save`, `load`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbret.errors import IndexFormatError
from mbret.indexes.base import Manifest, check_compatible, read_manifest
from mbret.indexes.faiss_index import INDEX_TYPES, FaissIndex, default_params
from mbret.indexes.maxsim import ExactMaxSimIndex
from mbret.indexes.plaid import PlaidIndex, PlaidSearchParams

INDEX_TYPES_BY_MODE = {"dense": INDEX_TYPES, "colbert": ("plaid", "exact")}


def load_index(path: str | Path) -> tuple[Any, Manifest]:
    """Load any mbret index directory by the kind its manifest names."""
    kind = read_manifest(path).kind
    if kind == "faiss":
        return FaissIndex.load(path)
    if kind == "maxsim":
        return ExactMaxSimIndex.load(path)
    if kind == "plaid":
        return PlaidIndex.load(path)
    raise IndexFormatError(f"{path}: unknown index kind {kind!r}")


__all__ = [
    "INDEX_TYPES",
    "INDEX_TYPES_BY_MODE",
    "ExactMaxSimIndex",
    "FaissIndex",
    "Manifest",
    "PlaidIndex",
    "PlaidSearchParams",
    "check_compatible",
    "default_params",
    "load_index",
    "read_manifest",
]
