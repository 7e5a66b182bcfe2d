"""mbret: retrieval on the ModernBERT encoder, with dense and ColBERT heads, FAISS/PLAID indexes and BEIR eval.

The public API is here, at the top::

    import mbret

    corpus = mbret.load_corpus("examples/scifact-mini/corpus.jsonl")
    retriever = mbret.Retriever.build(corpus, "minilm")
    hits = retriever.search(["a query"], k=10, search_params=mbret.SearchParams(n_full_scores=512))

Names are imported on first use (PEP 562), so `import mbret` is quick and loads no torch, faiss or
transformers: the light names (`SearchParams`, `Hit`, `Document`, `Client` and the errors) never do, and
`Retriever`, `evaluate` and the rest load what they need when first touched.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

from mbret._version import __version__

if _TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` below imports these on use
    from mbret.client import Client
    from mbret.data import load_corpus, load_dataset
    from mbret.errors import (
        IndexFormatError,
        InputError,
        MbretError,
        MbretWarning,
        ParameterError,
        StaleIndexError,
    )
    from mbret.eval.runner import evaluate
    from mbret.indexes import load_index
    from mbret.retrieval import FusedRetriever, Retriever, rerank
    from mbret.types import Document, Hit, SearchParams

# each public name and the module that defines it (kept in step with the TYPE_CHECKING imports above)
_EXPORTS: dict[str, str] = {
    "Retriever": "mbret.retrieval",
    "FusedRetriever": "mbret.retrieval",
    "rerank": "mbret.retrieval",
    "load_corpus": "mbret.data",
    "load_dataset": "mbret.data",
    "load_index": "mbret.indexes",
    "evaluate": "mbret.eval.runner",
    "Client": "mbret.client",
    "SearchParams": "mbret.types",
    "Hit": "mbret.types",
    "Document": "mbret.types",
    "MbretError": "mbret.errors",
    "InputError": "mbret.errors",
    "ParameterError": "mbret.errors",
    "IndexFormatError": "mbret.errors",
    "StaleIndexError": "mbret.errors",
    "MbretWarning": "mbret.errors",
}

# a literal list, as linters and type checkers read it; tests/test_api.py holds it to `_EXPORTS`
__all__ = [
    "Client",
    "Document",
    "FusedRetriever",
    "Hit",
    "IndexFormatError",
    "InputError",
    "MbretError",
    "MbretWarning",
    "ParameterError",
    "Retriever",
    "SearchParams",
    "StaleIndexError",
    "__version__",
    "evaluate",
    "load_corpus",
    "load_dataset",
    "load_index",
    "rerank",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mbret' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    # the public names, whether imported yet or not, and the submodules imported so far
    return sorted({*__all__, *(name for name in globals() if not name.startswith("_"))})
