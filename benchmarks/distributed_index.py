"""Distributed index builds: wall time and peak RSS per rank of 1 and 2 processes, and the serial part.

    python benchmarks/distributed_index.py --data ../shared/data/beir/scifact --model minilm --mode colbert

Baseline: the ordinary single-process `mbret index` with every core's threads (OMP_NUM_THREADS = cores).
Each N-process run is `torchrun --nproc-per-node N -m mbret index ...` with the cores split between the
ranks (OMP_NUM_THREADS = cores / N), so the comparison spends the same CPU. Prints each run's wall time
(process start to exit, model loading included, as a user waits for it), its ratio to the baseline, each
rank's seconds per phase and peak RSS, and the serial part of the sharded build: what rank 0 does while
the others wait (k-means and the codec's broadcast, the commit) as a share of the baseline's build time.
`--copies C` indexes C copies of the corpus (ids suffixed `#c`): with `--processes C` every rank's shard
is the size of the data's corpus (the issue's "SciFact-sized shards"). Results go to docs/benchmarks.md
("Distributed builds").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERIAL_PHASES = ("kmeans_s", "commit_s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(command: list[str], threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest child) of one command."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "beir" / "scifact"))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--mode", default="colbert", choices=("colbert", "dense"))
    parser.add_argument("--processes", default="2", help="comma-separated process counts besides the baseline")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(REPO / "runs" / "distributed-bench"))
    parser.add_argument("--copies", type=int, default=1, help="index this many copies of the corpus (new ids)")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data = args.data
    if args.copies > 1:
        source = Path(data) / "corpus.jsonl" if Path(data).is_dir() else Path(data)
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        data = str(out / "corpus.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            for c in range(args.copies):
                for row in rows:
                    f.write(json.dumps({**row, "_id": f"{row['_id']}#{c}"}) + "\n")
    index = [sys.executable, "-m", "mbret", "index", data, "--model", args.model, "--mode", args.mode]

    wall, rss = run([*index, "--output", str(out / "p1"), "--report", str(out / "p1.json")], args.cores)
    baseline = json.loads((out / "p1.json").read_text())["ranks"][0]
    build_s = baseline["encode_corpus_s"] + baseline["index_build_s"]
    results = {
        "baseline": {"wall_s": round(wall, 1), "build_s": round(build_s, 1), "peak_rss_mb": round(rss), **baseline}
    }
    print(f"1 process x {args.cores} threads: {wall:.1f} s wall, build {build_s:.1f} s, peak RSS {rss:.0f} MB")
    for n in (int(p) for p in args.processes.split(",")):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
        report = out / f"p{n}.json"
        wall_n, _ = run(
            [*launcher, *index[1:], "--output", str(out / f"p{n}"), "--report", str(report)], max(1, args.cores // n)
        )
        ranks = json.loads(report.read_text())["ranks"]
        serial = sum(ranks[0].get(p, 0.0) for p in SERIAL_PHASES)
        results[f"{n}_processes"] = {"wall_s": round(wall_n, 1), "serial_s": round(serial, 2), "ranks": ranks}
        print(
            f"{n} processes x {max(1, args.cores // n)} threads: {wall_n:.1f} s wall, "
            f"{wall / wall_n:.2f}x the baseline's speed; serial part (k-means + commit on rank 0) "
            f"{serial:.1f} s = {100 * serial / build_s:.1f}% of the baseline's build"
        )
        for r in ranks:
            phases = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r.items() if k.endswith("_s"))
            print(f"  rank {r['rank']}: {r['docs']} docs, peak RSS {r['peak_rss_mb']:.0f} MB; seconds: {phases}")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
