"""BM25 (`--mode bm25`): lexical scoring by `bm25s` over terms this index keeps, with stable doc ids.

bm25s scores a fixed corpus: its sparse score matrix has no add or delete. So this index keeps each
document's terms itself (ids into its own vocabulary: one flat int32 array with offsets, saved per
generation like every index's files) and has bm25s build the matrix over the live documents on the first
search after a change. Adds, deletes and compactions keep stable ids, and the IDF follows the live corpus,
as a rebuild from scratch would give. The cost of that is a rebuild per change, linear in the corpus.

Tokenization is bm25s's (lower-cased words of two or more characters, a stopword list), with a Snowball
stemmer from PyStemmer, as bm25s's own BEIR benchmark runs it. Queries and documents get the same.
Every setting is a `--index-param` recorded in the manifest's `index_params`.

A hit is a document that shares a term with the query, whatever its score (a bm25l or bm25+ shift, or
Robertson's zero IDF for a term in most documents): a BM25 search can return fewer than k hits, also
under a filter. Ties are broken by internal id, at the k-th hit too. Thread safety as for the other
indexes: searches share a read-write lock, and a change waits for the searches under way. The first search
after a change rebuilds the scorer under that read lock, so a writer queued meanwhile waits for it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mbret.errors import IndexFormatError, MbretError, ParameterError
from mbret.indexes.base import Manifest, ReadWriteLock, StableDocIds, Stored, origin_of, read_manifest
from mbret.io import atomic_file, load_npy, save_npy
from mbret.types import SearchParams

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
DEFAULT_PARAMS: dict[str, Any] = {
    "method": "lucene",
    "k1": 1.5,
    "b": 0.75,
    "delta": 0.5,  # bm25l and bm25+ only
    "stemmer": "english",  # a PyStemmer algorithm, or "none"
    "stopwords": "en",  # a bm25s stopword list ("en", "en_plus", ...), or "none"
}


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """BM25's settings, defaults filled in; an unknown or bad one is a one-line error naming it."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ParameterError("index_params", f"{unknown[0]}: bm25 takes {', '.join(DEFAULT_PARAMS)}")
    merged = {**DEFAULT_PARAMS, **params}
    if merged["method"] not in METHODS:
        raise ParameterError("index_params", f"method={merged['method']}: choose one of {', '.join(METHODS)}")
    for name in ("k1", "b", "delta"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ParameterError("index_params", f"{name}={value}: expected a number >= 0")
        merged[name] = float(value)
    if merged["b"] > 1:
        raise ParameterError("index_params", f"b={merged['b']}: expected a number in [0, 1]")
    if merged["stemmer"] != "none":
        import Stemmer

        if merged["stemmer"] not in Stemmer.algorithms():
            raise ParameterError(
                "index_params", f"stemmer={merged['stemmer']}: choose none or one of {', '.join(Stemmer.algorithms())}"
            )
    if merged["stopwords"] != "none":
        try:
            tokenize_with(["probe"], merged)
        except (ValueError, KeyError, TypeError):
            stopwords = merged["stopwords"]
            raise ParameterError("index_params", f"stopwords={stopwords}: not a bm25s stopword list") from None
    return merged


def tokenize_with(texts: Sequence[str], params: dict[str, Any]) -> list[list[str]]:
    """Each text's terms, as bm25s tokenizes them with these settings (no empty terms)."""
    import bm25s

    stemmer = None
    if params["stemmer"] != "none":
        import Stemmer

        stemmer = Stemmer.Stemmer(params["stemmer"])
    stopwords = None if params["stopwords"] == "none" else params["stopwords"]
    if not texts:
        return []
    terms = bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=stemmer, return_ids=False, show_progress=False)
    return [[t for t in row if t] for row in terms]


class Bm25Index(StableDocIds, Stored):
    """BM25 over the documents' text; `add` takes texts where other indexes take vectors, and `search`
    takes query texts."""

    index_type = "bm25"
    search_settings: tuple[str, ...] = ()  # the `SearchParams` a search reads: none
    dimension = 0
    is_trained = True  # nothing to sample beforehand

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = check_params(dict(params or {}))
        self._init_ids()
        self._vocab: dict[str, int] = {}
        self._terms: list[np.ndarray] = []  # by internal id; empty for a deleted document
        self._scorer: tuple[Any, np.ndarray] | None = None  # (bm25s model, internal id of each of its rows)
        self._rw = ReadWriteLock()
        self._changing = threading.RLock()  # one change or save at a time
        self._building = threading.Lock()  # one rebuild of the scorer at a time

    _keep_on_refresh = ("_rw", "_changing", "_building")

    def to(self, device: object) -> Bm25Index:
        """BM25 scores on the CPU: a no-op."""
        return self

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return tokenize_with(texts, self.params)

    @property
    def num_terms(self) -> int:
        return len(self._vocab)

    # -- changes -------------------------------------------------------------------------------------
    def add(self, doc_ids: Sequence[str], embeddings: Sequence[str], documents: Sequence[Any] | None = None) -> None:
        """Add documents by their text (`embeddings`: one string each, title and text joined); ids must be new."""
        texts = list(embeddings)
        if len(doc_ids) != len(texts):
            raise MbretError(f"{len(doc_ids)} doc ids for {len(texts)} texts")
        if any(not isinstance(t, str) for t in texts):
            raise MbretError("a bm25 index adds documents by their text: give one string per document")
        terms = self.tokenize(texts)
        with self._exclusive():
            rows = self._prepare_documents(doc_ids, documents)
            for row in terms:
                self._terms.append(np.fromiter((self._vocab.setdefault(t, len(self._vocab)) for t in row), np.int32))
            self._append_ids(doc_ids, rows)
            self._scorer = None

    def add_parts(self, directories: Sequence[str | Path]) -> None:
        raise MbretError("a bm25 index builds in one process, not from parts written by several")

    def delete(self, doc_ids: Sequence[str]) -> int:
        with self._exclusive():
            internal = self._remove_ids(doc_ids)
            for i in internal:
                self._terms[i] = np.zeros(0, dtype=np.int32)
            self._scorer = None
            return len(internal)

    def compact(self) -> int:
        """Drop deleted documents' slots for good (ids are renumbered, as in the other indexes); returns how
        many were dropped (their terms went at delete)."""
        with self._exclusive():
            dropped = len(self.doc_ids) - len(self)
            self._terms = [t for t, d in zip(self._terms, self.doc_ids) if d is not None]
            self._compact_ids()
            self._scorer = None
            return dropped

    # -- search --------------------------------------------------------------------------------------
    def _live_scorer(self) -> tuple[Any, np.ndarray] | None:
        """bm25s's model over the live documents, built on the first search after a change."""
        scorer = self._scorer
        if scorer is not None:
            return scorer
        with self._building:
            if self._scorer is None:
                import bm25s

                rows = np.array([i for i, d in enumerate(self.doc_ids) if d is not None], dtype=np.int64)
                if not any(len(self._terms[i]) for i in rows):
                    return None  # no live document has a term: nothing can match (and bm25s wants a vocabulary)
                p = self.params
                model = bm25s.BM25(method=p["method"], k1=p["k1"], b=p["b"], delta=p["delta"])
                vocab = dict(self._vocab)  # bm25s adds its empty token to the dict it is given
                model.index(
                    bm25s.tokenization.Tokenized(ids=[self._terms[i].tolist() for i in rows], vocab=vocab),
                    show_progress=False,
                )
                self._scorer = (model, rows)
            return self._scorer

    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        where: str | None = None,
        params: Sequence[Any] = (),
        ids: Iterable[str] | None = None,
        search_params: SearchParams | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, BM25 score) per query text, best first (ties by internal id); only documents that
        share a term with the query, and with a filter only those it selects. BM25 scores every matching
        document exactly: `search_params` is accepted and ignored."""
        if k <= 0:
            raise MbretError(f"-k {k}: must be a positive integer")
        if isinstance(queries, str) or any(not isinstance(q, str) for q in queries):
            raise MbretError("a bm25 index searches query texts: give a list of strings")
        terms = self.tokenize(list(queries))
        with self._rw.read():
            subset = self.select(where, params, ids)
            scorer = self._live_scorer()
            if scorer is None or (subset is not None and not len(subset)):
                return [[] for _ in queries]
            model, rows = scorer
            allowed = None
            if subset is not None:
                allowed = np.zeros(len(rows), dtype=bool)
                allowed[np.searchsorted(rows, subset)] = True
            results = []
            for query in terms:
                known = [self._vocab[t] for t in query if t in self._vocab]
                if not known:
                    results.append([])
                    continue
                scores = np.asarray(model.get_scores(known), dtype=np.float32)
                indices, indptr = model.scores["indices"], model.scores["indptr"]
                found = np.unique(np.concatenate([indices[indptr[t] : indptr[t + 1]] for t in known]))
                if allowed is not None:
                    found = found[allowed[found]]
                if len(found) > k:  # every hit tied with the k-th stays in the running, then ties go by id
                    kth = np.partition(scores[found], len(found) - k)[len(found) - k]
                    found = found[scores[found] >= kth]
                found = found[np.lexsort((found, -scores[found]))][:k]
                results.append([(self.doc_ids[int(rows[r])], float(scores[r])) for r in found])  # type: ignore[misc]
            return results

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path, manifest: Manifest, replace: bool = False) -> None:
        """Write the terms (int32 ids with offsets), the vocabulary and doc ids (JSON), atomically."""

        def prepare() -> Any:
            if not self.doc_ids:
                raise MbretError("cannot save an empty index: add documents first")
            manifest.kind, manifest.index_type = "bm25", self.index_type
            manifest.dimension, manifest.num_docs = 0, len(self)
            manifest.index_params = dict(self.params)
            terms = np.concatenate(self._terms).astype(np.int32)
            offsets = np.concatenate([[0], np.cumsum([len(t) for t in self._terms])]).astype(np.int64)
            vocab = sorted(self._vocab, key=self._vocab.__getitem__)

            def write_files(directory: Path, gen: int) -> dict[str, str]:
                names = {
                    "terms": f"terms-{gen:06d}.npy",
                    "offsets": f"offsets-{gen:06d}.npy",
                    "vocab": f"vocab-{gen:06d}.json",
                    "doc_ids": f"doc_ids-{gen:06d}.json",
                }
                save_npy(directory / names["terms"], terms)
                save_npy(directory / names["offsets"], offsets)
                with atomic_file(directory / names["vocab"]) as fh:
                    json.dump(vocab, fh, ensure_ascii=False)
                with atomic_file(directory / names["doc_ids"]) as fh:
                    json.dump({"doc_ids": self.doc_ids}, fh)
                return names | self._write_documents(directory, gen)

            return write_files

        self._save_beside_searches(path, manifest, replace, prepare)

    @classmethod
    def load(cls, path: str | Path) -> tuple[Bm25Index, Manifest]:
        """Load and cross-check an index directory; a truncated or inconsistent file is a clear error."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.kind != "bm25":
            raise IndexFormatError(f"{path}: a {manifest.kind} index, not a bm25 one")
        files = {role: path / name for role, name in manifest.files.items()}
        terms = np.asarray(load_npy(files["terms"], None))
        offsets = np.asarray(load_npy(files["offsets"], None))
        try:
            vocab = json.loads(files["vocab"].read_text(encoding="utf-8"))
            doc_ids = json.loads(files["doc_ids"].read_text(encoding="utf-8"))["doc_ids"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise IndexFormatError(f"{path}: truncated or corrupt vocabulary or doc id file") from None
        if len(offsets) != len(doc_ids) + 1 or (len(offsets) and int(offsets[-1]) != len(terms)):
            raise IndexFormatError(f"{files['offsets']}: {len(offsets) - 1} documents' offsets for {len(doc_ids)} ids")
        if len(terms) and (int(terms.min()) < 0 or int(terms.max()) >= len(vocab)):
            raise IndexFormatError(f"{files['terms']}: term ids outside the {len(vocab)}-term vocabulary")
        self = cls(manifest.index_params)
        self._init_ids(doc_ids)
        self._vocab = {term: i for i, term in enumerate(vocab)}
        self._terms = [terms[offsets[i] : offsets[i + 1]].astype(np.int32) for i in range(len(doc_ids))]
        if len(self) != manifest.num_docs:
            raise IndexFormatError(f"{path}: manifest says {manifest.num_docs} docs, id file has {len(self)}")
        self._origin, self._path = origin_of(manifest, path), path
        self._open_documents(path, manifest)
        return self, manifest
