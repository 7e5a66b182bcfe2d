"""Indexes behind one small interface: `add`, `delete`, `search`, `save`, `load` (FAISS now; PLAID next)."""

from mbret.indexes.base import Manifest, check_compatible, read_manifest
from mbret.indexes.faiss_index import INDEX_TYPES, FaissIndex, default_params

__all__ = ["INDEX_TYPES", "FaissIndex", "Manifest", "check_compatible", "default_params", "read_manifest"]
