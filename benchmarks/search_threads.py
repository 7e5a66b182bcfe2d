"""Query-level threads with and without torch's thread count set to 1: what leaving the process-wide count
alone (so concurrent searches cannot change it for everyone) costs PLAID and exact MaxSim on SciFact.

The baseline is the old `map_on_cores`, which set torch to 1 thread while its worker threads ran and
restored it after. Both run over the same query vectors, alternately, `--repeats` times each.

    python benchmarks/search_threads.py --exact runs/colbert-defaults/colbert-none
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import mbret.indexes.maxsim as maxsim
import mbret.indexes.plaid as plaid
from mbret.data.datasets import load_dataset
from mbret.hardware import map_on_cores
from mbret.indexes import PlaidIndex
from mbret.retrieval import Retriever


def map_single_threaded_torch(fn: Callable, items: Sequence, workers: int | None = None) -> list:
    """The baseline: torch set to 1 thread while the worker threads run, restored after."""
    threads = torch.get_num_threads()
    workers = min(workers or threads, len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exact", type=Path, required=True, help="an exact ColBERT index of SciFact")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/beir/scifact"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    exact = Retriever.load(args.exact, device="cpu")
    queries = exact.encoder.encode_queries(list(load_dataset(args.data).queries.values()))
    tokens, lengths = exact.index._flat()
    index = PlaidIndex(exact.encoder.dimension, nbits=2)
    index.add_in_chunks(list(exact.index.doc_ids), list(torch.split(tokens, lengths.tolist())))
    index.search(queries[:4], k=10)  # builds the search state outside the timings
    for name, search in (("PLAID nbits=2", index.search), ("exact MaxSim", exact.index.search)):
        rates: dict[str, list[float]] = {"set to 1 (baseline)": [], "left alone": []}
        for _ in range(args.repeats):
            for label, mapper in (("set to 1 (baseline)", map_single_threaded_torch), ("left alone", map_on_cores)):
                plaid.map_on_cores = maxsim.map_on_cores = mapper
                start = time.perf_counter()
                search(queries, k=10)
                rates[label].append(len(queries) / (time.perf_counter() - start))
        plaid.map_on_cores = maxsim.map_on_cores = map_on_cores
        base, new = (max(rates[label]) for label in rates)
        print(f"{name}, k=10: {base:.1f} q/s with torch at 1 thread, {new:.1f} left alone: {new / base:.2f}x")


if __name__ == "__main__":
    main()
