"""Dataset loaders: BEIR directories, bare corpus JSONL, ir_datasets ids and Hugging Face ids.

Everything is validated before anything is written, and malformed input raises `InputError` naming the
file and line, so a bad file never leaves half an index or half a result behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbret.errors import InputError, MbretError

Corpus = dict[str, dict[str, Any]]  # doc id -> {"title": ..., "text": ..., "metadata"?: {...}}, in file order
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> relevance


@dataclass
class Dataset:
    """A retrieval dataset: corpus, queries and the relevance judgements of one split."""

    name: str
    corpus: Corpus
    queries: Queries = field(default_factory=dict)
    qrels: Qrels = field(default_factory=dict)
    split: str | None = None


def doc_text(doc: dict[str, Any]) -> str:
    """Join title and text as BEIR does (`title + " " + text`, stripped)."""
    return (doc.get("title", "") + " " + doc.get("text", "")).strip()


def metadata_error(metadata: object) -> str | None:
    """Why `metadata` cannot be a document's metadata (None if it can): a JSON object of flat values,
    strings, numbers, booleans or null, so every field can be filtered on with one SQL comparison."""
    if not isinstance(metadata, dict):
        return f'"metadata" must be a JSON object, got {type(metadata).__name__}'
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            return f'"metadata" field names must be non-empty strings, got {key!r}'
        if value is not None and not isinstance(value, (str, int, float, bool)):
            return (
                f'"metadata" field {key!r} holds a {type(value).__name__}; values must be strings, numbers, '
                "booleans or null (nested values cannot be filtered on)"
            )
    return None


def iter_lines(path: Path, span: ByteSpan | None = None) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without its end); tolerates CRLF and a UTF-8 BOM. With
    `span`, only the lines that start inside it (numbered from its `first_line`)."""
    start, end, first = (span.start, span.end, span.first_line) if span is not None else (0, None, 1)
    with open(path, "rb") as fh:
        fh.seek(start)
        lineno, position = first - 1, start
        while end is None or position < end:
            raw = fh.readline()
            if not raw:
                break
            lineno, position = lineno + 1, position + len(raw)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(path, lineno, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            yield lineno, line.rstrip("\r\n")


def iter_jsonl(path: Path, span: ByteSpan | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in iter_lines(path, span):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _record_id(path: Path, lineno: int, obj: dict[str, Any]) -> str:
    if "_id" not in obj:
        raise InputError(path, lineno, 'missing "_id" field')
    value = obj["_id"]
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise InputError(path, lineno, f'"_id" must be a non-empty string or integer, got {value!r}')
    return str(value)


def _text_field(path: Path, lineno: int, obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(path, lineno, f'"{name}" must be a string, got {type(value).__name__}')
    return value


def _iter_records(path: Path, kind: str, span: ByteSpan | None = None) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield (line, id, object) from a BEIR JSONL file (or its `span`), refusing missing and duplicate ids."""
    if not path.is_file():
        raise MbretError(f"{path}: file not found")
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path, span):
        record_id = _record_id(path, lineno, obj)
        if record_id in first_line:
            raise InputError(path, lineno, f"duplicate {kind} id {record_id!r} (first on line {first_line[record_id]})")
        first_line[record_id] = lineno
        yield lineno, record_id, obj


def load_corpus_jsonl(path: str | Path, strict_metadata: bool = True, span: ByteSpan | None = None) -> Corpus:
    """Read a BEIR corpus file: one `{"_id", "title"?, "text", "metadata"?}` object per line, ids unique.
    `metadata` is a flat object (`metadata_error`); a nested one is refused with its line, or with
    `strict_metadata=False` (a BEIR dataset read for evaluation, whose metadata is informational: CQADupStack
    lists tags) loses its nested fields. With `span` (one shard of a distributed build, `byte_spans`), only
    the documents on the lines starting inside it, and an empty span is no error."""
    path = Path(path)
    corpus: Corpus = {}
    for lineno, doc_id, obj in _iter_records(path, "doc", span):
        if "text" not in obj and "title" not in obj:
            raise InputError(path, lineno, 'document has neither "text" nor "title"')
        corpus[doc_id] = {
            "title": _text_field(path, lineno, obj, "title"),
            "text": _text_field(path, lineno, obj, "text"),
        }
        metadata = obj.get("metadata")
        if metadata:
            if not strict_metadata and isinstance(metadata, dict):
                metadata = {k: v for k, v in metadata.items() if metadata_error({k: v}) is None}
            problem = metadata_error(metadata)
            if problem:
                raise InputError(path, lineno, problem)
            corpus[doc_id]["metadata"] = metadata
    if not corpus and span is None:
        raise InputError(path, None, "corpus is empty")
    return corpus


def load_queries_jsonl(path: str | Path) -> Queries:
    path = Path(path)
    queries: Queries = {}
    for lineno, qid, obj in _iter_records(path, "query"):
        if "text" not in obj:
            raise InputError(path, lineno, 'query has no "text" field')
        queries[qid] = _text_field(path, lineno, obj, "text")
    return queries


def load_qrels_tsv(path: str | Path, corpus: Corpus | None = None, queries: Queries | None = None) -> Qrels:
    """Read BEIR qrels (`query-id<TAB>corpus-id<TAB>score`, optional header); ids must exist if given."""
    path = Path(path)
    if not path.is_file():
        raise MbretError(f"{path}: qrels file not found")
    qrels: Qrels = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) == 4:  # TREC style: qid 0 docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise InputError(path, lineno, f"expected 3 tab-separated columns, got {len(parts)}")
        qid, did, score = (p.strip() for p in parts)
        try:
            rel = int(score)
        except ValueError:
            if lineno == 1:  # header such as "query-id corpus-id score"
                continue
            raise InputError(path, lineno, f"relevance {score!r} is not an integer") from None
        if corpus is not None and did not in corpus:
            raise InputError(path, lineno, f"doc id {did!r} is not in the corpus")
        if queries is not None and qid not in queries:
            raise InputError(path, lineno, f"query id {qid!r} is not in the queries file")
        qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_beir_dir(path: str | Path, split: str = "test") -> Dataset:
    """Load a BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) for one split."""
    path = Path(path)
    corpus = load_corpus_jsonl(path / "corpus.jsonl", strict_metadata=False)
    queries = load_queries_jsonl(path / "queries.jsonl")
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        raise MbretError(f"{qrels_path}: no qrels for split {split!r} (available: {', '.join(available) or 'none'})")
    qrels = load_qrels_tsv(qrels_path, corpus=corpus, queries=queries)
    queries = {qid: queries[qid] for qid in qrels}
    return Dataset(name=path.name, corpus=corpus, queries=queries, qrels=qrels, split=split)


@dataclass(frozen=True)
class ByteSpan:
    """Bytes [start, end) of a file, cut at line starts, whose first line is line `first_line` of the file:
    one shard of a corpus, read without reading the rest (`byte_spans`, `load_corpus_jsonl(span=...)`)."""

    start: int
    end: int
    first_line: int = 1


def byte_spans(path: str | Path, count: int) -> list[ByteSpan]:
    """`count` spans of about equal size covering the file, each starting at a line start (a span may be
    empty), numbered from the lines before them: the shards of a distributed build. Reads only the bytes
    up to each cut to find the line start and count the lines (a streaming pass, no line kept)."""
    path = Path(path)
    if count < 1:
        raise MbretError(f"{count} shards: need at least one")
    if not path.is_file():
        raise MbretError(f"{path}: file not found")
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for i in range(1, count):
            offset = max(size * i // count, cuts[-1])
            if offset > 0:
                fh.seek(offset - 1)
                fh.readline()  # to the end of the line holding byte offset - 1: the next line's start
                offset = fh.tell()
            cuts.append(min(max(offset, cuts[-1]), size))
    cuts.append(size)
    spans, line = [], 1
    with open(path, "rb") as fh:
        for start, end in zip(cuts, cuts[1:]):
            spans.append(ByteSpan(start, end, line))
            fh.seek(start)
            left = end - start
            while left > 0:
                block = fh.read(min(left, 1 << 24))
                if not block:
                    break
                line += block.count(b"\n")
                left -= len(block)
    return spans


def load_corpus(source: str | Path) -> Corpus:
    """A corpus from a JSONL file, a BEIR directory, or an `irds:`/`hf:` dataset id."""
    text = str(source)
    if text.startswith("irds:") or text.startswith("hf:"):
        return load_dataset(text).corpus
    path = Path(source)
    if path.is_dir():
        return load_corpus_jsonl(path / "corpus.jsonl")
    return load_corpus_jsonl(path)


def load_dataset(source: str | Path, split: str = "test") -> Dataset:
    """Resolve DATA for `mbret eval`: a BEIR directory, `irds:<id>`, or `hf:<owner/name>`."""
    text = str(source)
    if text.startswith("irds:"):
        return load_ir_datasets(text[len("irds:") :], split=split)
    if text.startswith("hf:"):
        return load_hf_beir(text[len("hf:") :], split=split)
    path = Path(source)
    if path.is_dir():
        return load_beir_dir(path, split=split)
    raise MbretError(f"{source}: not a BEIR directory, nor an irds:<id> or hf:<owner/name> dataset id")


def dataset_from_records(
    name: str,
    docs: Any,
    queries: Any,
    qrels: Any,
    split: str | None,
) -> Dataset:
    """Build a Dataset from iterables of (id, title, text), (id, text) and (qid, did, rel), checking ids."""
    corpus: Corpus = {}
    for doc_id, title, body in docs:
        doc_id = str(doc_id)
        if doc_id in corpus:
            raise InputError(name, None, f"duplicate doc id {doc_id!r}")
        corpus[doc_id] = {"title": title or "", "text": body or ""}
    query_map: Queries = {str(qid): text for qid, text in queries}
    judged: Qrels = {}
    for qid, did, rel in qrels:
        qid, did = str(qid), str(did)
        if did not in corpus:
            raise InputError(name, None, f"qrels name doc id {did!r}, which is not in the corpus")
        if qid not in query_map:
            raise InputError(name, None, f"qrels name query id {qid!r}, which is not in the queries")
        judged.setdefault(qid, {})[did] = int(rel)
    return Dataset(name=name, corpus=corpus, queries={q: query_map[q] for q in judged}, qrels=judged, split=split)


def load_ir_datasets(dataset_id: str, split: str = "test") -> Dataset:
    """Load `beir/scifact/test`-style ids through ir_datasets (downloads on first use)."""
    import ir_datasets

    ds_id = dataset_id
    if not dataset_id.endswith("/" + split) and _irds_has(f"{dataset_id}/{split}"):
        ds_id = f"{dataset_id}/{split}"
    try:
        ds = ir_datasets.load(ds_id)
        docs = ((d.doc_id, getattr(d, "title", ""), getattr(d, "text", "")) for d in ds.docs_iter())
        queries = ((q.query_id, q.text) for q in ds.queries_iter())
        qrels = ((r.query_id, r.doc_id, r.relevance) for r in ds.qrels_iter())
        return dataset_from_records(f"irds:{ds_id}", docs, queries, qrels, split=ds_id.rsplit("/", 1)[-1])
    except KeyError:
        raise MbretError(f"irds:{dataset_id}: unknown ir_datasets id") from None
    except (OSError, ConnectionError) as exc:
        raise MbretError(f"irds:{ds_id}: could not download the dataset ({exc})") from None


def _irds_has(dataset_id: str) -> bool:
    import ir_datasets

    try:
        ir_datasets.registry[dataset_id]
    except KeyError:
        return False
    return True


def load_hf_beir(repo_id: str, split: str = "test") -> Dataset:
    """Load a dataset in the BEIR hub schema: `<repo>` (configs corpus, queries) and `<repo>-qrels`."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise MbretError("the `datasets` package is needed for hf: ids") from exc
    try:
        corpus_ds = datasets.load_dataset(repo_id, "corpus", split="corpus")
        queries_ds = datasets.load_dataset(repo_id, "queries", split="queries")
        qrels_ds = datasets.load_dataset(f"{repo_id}-qrels", split=split)
    except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; all mean "not reachable"
        raise MbretError(
            f"hf:{repo_id}: could not load from the Hugging Face hub ({type(exc).__name__}: {exc})"
        ) from None
    docs = ((r["_id"], r.get("title", ""), r.get("text", "")) for r in corpus_ds)
    queries = ((r["_id"], r["text"]) for r in queries_ds)
    qrels = ((r["query-id"], r["corpus-id"], r["score"]) for r in qrels_ds)
    return dataset_from_records(f"hf:{repo_id}", docs, queries, qrels, split=split)
