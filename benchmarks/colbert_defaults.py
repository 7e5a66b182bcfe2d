"""The ColBERT head's defaults, measured: markers, query expansion and the query length cap.

For a head built from a non-ColBERT checkpoint (all-MiniLM-L6-v2 by default; untrained 128-d projection),
on a BEIR dataset's own queries and its short and long query sets (`mbret.data.query_sets`), exact MaxSim
(so nothing but the encoding differs), NDCG@10 for:
- markers: `text` ("[Q] "/"[D] "), `unused` ([unused0]/[unused1] as single tokens), `none`;
- queries: expanded with [MASK] to 32 tokens, or not expanded and cut at 32, 64, 128 or 300 tokens;
- beside dense retrieval with the same backbone (the bar the ColBERT head should clear).

The corpus is encoded once per marker setting (and once for dense) and cached under --work, so a rerun
only searches. Prints a markdown table and writes WORK/colbert_defaults.json.

    python benchmarks/colbert_defaults.py --data ../shared/data/beir/scifact --work runs/colbert-defaults
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mbret.data.datasets import load_beir_dir
from mbret.data.query_sets import query_sets
from mbret.eval.runner import evaluate
from mbret.indexes import load_index
from mbret.retrieval import Retriever
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder

# (label, query expansion, query length); which query sets each runs on (short queries never reach 32)
QUERY_SETTINGS = [
    ("expand 32", True, 32, ("full", "short", "long")),
    ("cut 32", False, 32, ("full", "long")),
    ("cut 64", False, 64, ("long",)),
    ("cut 128", False, 128, ("long",)),
    ("cut 300", False, 300, ("full", "short", "long")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--work", type=Path, default=Path("runs/colbert-defaults"))
    parser.add_argument("--markers", default="text,unused,none")
    parser.add_argument("--document-length", type=int, default=300)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()
    sets = query_sets(load_beir_dir(args.data))
    args.work.mkdir(parents=True, exist_ok=True)
    out_file = args.work / "colbert_defaults.json"
    results = json.loads(out_file.read_text()) if out_file.is_file() else {}

    def record(key: str, value: float) -> None:
        results[key] = round(value, 4)
        out_file.write_text(json.dumps(results, indent=2))
        print(f"{key}: {value:.4f}", flush=True)

    dense_dir = args.work / "dense"
    if not (dense_dir / "manifest.json").is_file():
        Retriever.build(sets["full"].corpus, args.model, index_type="flat", dtype=args.dtype).save(dense_dir)
    dense = Retriever(DenseEncoder.load(args.model, device="cpu", dtype=args.dtype), load_index(dense_dir)[0])
    for name, dataset in sets.items():
        if f"dense/{name}" not in results:
            record(
                f"dense/{name}", evaluate(dataset, dense, metrics=["ndcg@10"], show_progress=False).metrics["ndcg@10"]
            )
    for markers in args.markers.split(","):
        encoder = ColBERTEncoder.load(
            args.model, device="cpu", dtype=args.dtype, document_length=args.document_length, markers=markers
        )
        index_dir = args.work / f"colbert-{markers}"
        if not (index_dir / "manifest.json").is_file():
            start = time.perf_counter()
            Retriever.build(sets["full"].corpus, encoder, index_type="exact").save(index_dir)
            print(f"encoded the corpus with markers {markers} in {time.perf_counter() - start:.0f}s", flush=True)
        retriever = Retriever(encoder, load_index(index_dir)[0])
        for label, expansion, length, names in QUERY_SETTINGS:
            encoder.set_query_expansion(expansion, length)
            for name in names:
                key = f"colbert-{markers}/{label}/{name}"
                if key not in results:
                    result = evaluate(sets[name], retriever, metrics=["ndcg@10"], show_progress=False)
                    record(key, result.metrics["ndcg@10"])
    print(table(results, args.markers.split(",")))


def table(results: dict[str, float], markers: list[str]) -> str:
    lines = ["| head | markers | queries | full | short | long |", "|---|---|---|---|---|---|"]
    lines.append(
        "| dense | | | "
        + " | ".join(f"{results.get(f'dense/{n}', float('nan')):.4f}" for n in ("full", "short", "long"))
        + " |"
    )
    for m in markers:
        for label, *_ in QUERY_SETTINGS:
            cells = [results.get(f"colbert-{m}/{label}/{n}") for n in ("full", "short", "long")]
            lines.append(
                f"| ColBERT | {m} | {label} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
