"""PLAID against exact MaxSim on SciFact (ColBERT head over all-MiniLM-L6-v2), in one run.

Prints, for exact MaxSim (float32: the baseline; then with the bfloat16 screen, same hits) and PLAID at
each nbits: search queries/s (index search only, queries encoded once beforehand), NDCG@10, and the ratio
of queries/s to float32 exact MaxSim's; then PLAID build time and peak
RSS at three corpus sizes (each build in its own process, streaming chunks from a memory-mapped file),
and bytes per token at each nbits.

The corpus is encoded once into an exact index directory (reused when present):
    python benchmarks/plaid_search.py --data ../shared/data/beir/scifact --work runs/plaid-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the address space made by exec, so
    it excludes the parent's memory that `ru_maxrss` carries over a fork + exec."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_plaid_from_npy(embeddings_dir: str, fraction: float, nbits: int, out: str, chunk_docs: int = 2048) -> None:
    """Stream a fraction of an exact index's token vectors into a PLAID index; print time and peak RSS."""
    from mbret.indexes import Manifest, PlaidIndex, read_manifest

    manifest = read_manifest(embeddings_dir)
    doc_ids = json.loads((Path(embeddings_dir) / manifest.files["doc_ids"]).read_text())["doc_ids"]
    tokens_file = Path(embeddings_dir) / manifest.files["embeddings"]
    with open(tokens_file, "rb") as fh:  # read rows with plain reads: a memory map's touched pages would
        np.lib.format.read_magic(fh)  # count in this process's RSS and hide what the build itself holds
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        data_offset = fh.tell()
    row_bytes = shape[1] * np.dtype(dtype).itemsize

    def read_rows(first: int, last: int) -> np.ndarray:
        rows = np.fromfile(
            tokens_file, dtype=dtype, count=(last - first) * shape[1], offset=data_offset + first * row_bytes
        )
        return rows.reshape(last - first, shape[1])

    doclens = np.load(Path(embeddings_dir) / manifest.files["doclens"])
    n_docs = max(1, int(len(doclens) * fraction))
    offsets = np.concatenate([[0], np.cumsum(doclens)])
    start = time.perf_counter()
    index = PlaidIndex(manifest.dimension, nbits=nbits)
    rng = np.random.default_rng(0)
    from mbret.indexes.plaid import default_num_centroids

    num_tokens = int(offsets[n_docs])
    k = default_num_centroids(num_tokens)
    # train on whole documents drawn at random, as Retriever.add does, until ~40 vectors per centroid
    order = rng.permutation(n_docs)
    wanted = np.searchsorted(np.cumsum(doclens[order]), 40 * k) + 1
    picked = np.sort(order[:wanted])
    sample = np.concatenate([read_rows(int(offsets[i]), int(offsets[i + 1])) for i in picked]).astype(np.float32)
    index.train(torch.from_numpy(sample), num_tokens=num_tokens)
    del sample
    for begin in range(0, n_docs, chunk_docs):
        end = min(begin + chunk_docs, n_docs)
        block = torch.from_numpy(read_rows(int(offsets[begin]), int(offsets[end])))  # float16, as stored
        docs = list(torch.split(block, doclens[begin:end].tolist()))
        index.add(doc_ids[begin:end], docs)
    index.save(
        out,
        Manifest(
            kind="plaid",
            mode="colbert",
            model=manifest.model,
            dimension=manifest.dimension,
            normalized=True,
            max_length=manifest.max_length,
            num_docs=0,
            index_type="plaid",
        ),
        replace=True,
    )
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(json.dumps({"docs": n_docs, "tokens": num_tokens, "build_s": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--work", default="runs/plaid-bench", help="where the encoded corpus and indexes go")
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--sizes", type=float, nargs="*", default=[0.25, 0.5, 1.0], help="corpus fractions; none: skip those builds"
    )
    parser.add_argument("--only-sizes", action="store_true", help="run only the three-size build measurement")
    parser.add_argument("--_build", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._build:
        build_plaid_from_npy(args._build[0], float(args._build[1]), int(args._build[2]), args._build[3])
        return

    from mbret.eval.data import load_dataset
    from mbret.eval.metrics import evaluate_run
    from mbret.hardware import cpu_has_native
    from mbret.indexes import ExactMaxSimIndex, load_index
    from mbret.retrieval import Retriever
    from mbret.retrieval.colbert import ColBERTEncoder

    work = Path(args.work)
    dataset = load_dataset(args.data)
    exact_dir = work / "exact"
    encoder = ColBERTEncoder.load(args.model, device="cpu")
    if not (exact_dir / "manifest.json").is_file():
        retriever = Retriever(encoder=encoder, index=ExactMaxSimIndex(encoder.dimension))
        retriever.add(dataset.corpus)
        retriever.save(exact_dir, replace=True)
        print(f"encoded {len(dataset.corpus)} documents in {retriever.timings['encode_corpus_s']:.0f}s")
    exact, _ = load_index(exact_dir)
    qids = list(dataset.queries)
    queries = encoder.encode_queries([dataset.queries[q] for q in qids])
    print(
        f"{len(exact)} documents, {exact.num_tokens} token vectors, {len(qids)} queries; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    def measure(index: object, k: int, **options: object) -> tuple[float, float]:
        index.search(queries[:2], k=k, **options)  # warm-up: builds derived state
        start = time.perf_counter()
        hits = index.search(queries, k=k, **options)  # SciFact has no query id equal to a doc id: nothing to drop
        seconds = time.perf_counter() - start
        run = {q: dict(row) for q, row in zip(qids, hits)}
        ndcg = evaluate_run(dataset.qrels, run, ["ndcg@10"])[0]["ndcg@10"]
        return len(qids) / seconds, ndcg

    if args.only_sizes:
        args.nbits = []
    # the baseline: exact MaxSim in float32 throughout; then as search runs it by default (with the bfloat16
    # screen where the CPU has native bfloat16), whose hits are the same
    exact_rows = {k: measure(exact, k, screen=False) for k in (10, 100)} if args.nbits else {}
    screen_rows = {k: measure(exact, k, screen=True) for k in (10, 100)} if args.nbits else {}
    if args.nbits:
        native = cpu_has_native(torch.bfloat16, unknown=False)
        print(f"native bfloat16 on this CPU: {native} (so exact search screens by default: {native})")
    print(f"{'index':<16} {'k':>4} {'queries/s':>10} {'NDCG@10':>8} {'x exact':>8}" if args.nbits else "")
    for k, (qps, ndcg) in exact_rows.items():
        print(f"{'exact MaxSim':<16} {k:>4} {qps:10.2f} {ndcg:8.4f} {1.0:8.1f}")
    for k, (qps, ndcg) in screen_rows.items():
        print(f"{'exact, screened':<16} {k:>4} {qps:10.2f} {ndcg:8.4f} {qps / exact_rows[k][0]:8.1f}")
    builds = {}
    for nbits in args.nbits:
        out = work / f"plaid-nbits{nbits}"
        done = subprocess.run(
            [sys.executable, __file__, "--_build", str(exact_dir), "1.0", str(nbits), str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
        builds[nbits] = json.loads(done.stdout.strip().splitlines()[-1])
        plaid, _ = load_index(out)
        stored = sum(f.stat().st_size for f in out.glob("*.npy") if f.name.startswith(("codes", "residuals")))
        builds[nbits]["bytes_per_token"] = stored / plaid.num_tokens
        for k in (10, 100):
            qps, ndcg = measure(plaid, k)
            print(
                f"{'PLAID nbits=' + str(nbits):<16} {k:>4} {qps:10.2f} {ndcg:8.4f} {qps / exact_rows[k][0]:8.1f}"
                f"  ({qps / screen_rows[k][0]:.1f}x screened)"
            )
    for nbits, build in builds.items():
        print(
            f"PLAID nbits={nbits}: {build['bytes_per_token']:.1f} bytes/token on disk (codes + residuals); "
            f"build from encoded vectors {build['build_s']:.1f}s, peak RSS {build['peak_rss_mb']:.0f} MB"
        )
    if args.sizes:
        print(f"build at {len(args.sizes)} corpus sizes (nbits=2, streaming 2048-document chunks):")
    for fraction in args.sizes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_build",
                str(exact_dir),
                str(fraction),
                "2",
                str(work / f"plaid-size{fraction}"),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        build = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"  {build['docs']:>6} docs {build['tokens']:>9} tokens: build {build['build_s']:6.1f}s, "
            f"peak RSS {build['peak_rss_mb']:6.0f} MB"
        )


if __name__ == "__main__":
    main()
