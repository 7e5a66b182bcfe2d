"""TREC run files (`qid Q0 docid rank score tag`, one hit a line), as trec_eval, Pyserini and BEIR write them."""

from __future__ import annotations

from pathlib import Path

from mbret.errors import InputError, MbretError

Run = dict[str, list[tuple[str, float]]]


def read_trec_run(path: str | Path) -> Run:
    """Each query's hits, best first (by score, then rank as written); a malformed line is an error naming
    the file and line, and so is a doc id listed twice for one query."""
    path = Path(path)
    if not path.is_file():
        raise MbretError(f"{path}: run file not found")
    hits: dict[str, list[tuple[float, int, str]]] = {}
    seen: set[tuple[str, str]] = set()
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise InputError(path, number, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}")
            qid, _, doc_id, rank, score, _ = fields
            try:
                rank_value, score_value = int(rank), float(score)
            except ValueError:
                raise InputError(path, number, f"rank {rank!r} and score {score!r} must be numbers") from None
            if (qid, doc_id) in seen:
                raise InputError(path, number, f"doc {doc_id!r} is listed twice for query {qid!r}")
            seen.add((qid, doc_id))
            hits.setdefault(qid, []).append((score_value, rank_value, doc_id))
    return {qid: [(d, s) for s, _, d in sorted(rows, key=lambda r: (-r[0], r[1], r[2]))] for qid, rows in hits.items()}
