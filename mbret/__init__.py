"""mbret: retrieval on the ModernBERT encoder, with dense and ColBERT heads, FAISS/PLAID indexes and BEIR eval."""

from __future__ import annotations

__version__ = "0.1.0"

from mbret.errors import InputError, MbretError  # noqa: E402

__all__ = ["InputError", "MbretError", "__version__"]
