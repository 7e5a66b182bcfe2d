"""The GPU checks that issues 3 and 5 leave open, in one short run on a lent device, with the figures to record.

A lent GPU machine has a few minutes of device time and reaches nothing outside itself, so everything is
prepared here and the run is one command. The model is a *random* ModernBERT of base shape (22 layers,
768 wide, global attention every third layer, 8192 positions) with all-MiniLM-L6-v2's tokenizer: no
weights travel, the GPU work is what a real ModernBERT-base does, and retrieval quality is not the point
(CPU and GPU are compared against each other, on the same vectors).

Stages (each recorded in gpu_check.json as it finishes, so a timeout still returns what ran):
  env          torch/CUDA/device, flash-attn, library versions
  dense        SciFact through the dense head on the device (bf16, SDPA or flash-attn): docs/s, tokens/s,
               peak memory; device fp32 and bf16 embeddings against CPU fp32 ones
  colbert      SciFact through the ColBERT head on the device (documents 300) into an exact index
  exact        exact MaxSim searched on the device and on the CPU: queries/s, identical top-10s, score gap
  plaid        PLAID nbits 2 and 4 built from those vectors, searched on the device and on the CPU at k=10/100
  cli          `mbret eval --mode colbert --index-type plaid --device cuda` and `mbret search --device cuda`
  long_docs    8192-token documents through both heads (token-budget batches): no OOM, peak memory, tokens/s,
               and batched vectors equal to vectors encoded one document at a time
  train        `mbret train --preset paper-colbert-base` for a few steps: samples/s, peak memory

Here (prepare once):  bash scripts/gpu_bundle.sh       # wheels, SciFact, tokenizer -> .gpu-bundle/ (~41 MB)
On the device:        see docs/benchmarks.md, "GPU check" (pip install the wheels into /tmp/site, then
                      PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out $OUT)
Dry run on CPU:       python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu-check   (CI runs it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbret.data.datasets import Dataset, doc_text, load_dataset  # noqa: E402
from mbret.eval.metrics import evaluate_run  # noqa: E402
from mbret.eval.sources import write_beir_files  # noqa: E402


class Report:
    """Results by stage, rewritten to disk after every stage."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.stages: dict[str, dict[str, Any]] = {}
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            figures = fn()
            entry = {"ok": True, **figures}
        except Exception as exc:  # record and go on: one failing stage must not cost the others
            traceback.print_exc()
            entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        entry["seconds"] = round(time.perf_counter() - start, 2)
        self.stages[name] = entry
        print(json.dumps(entry, indent=1, default=str), flush=True)
        self.save()

    def save(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.stages, indent=1, default=str))
        tmp.replace(self.out / "gpu_check.json")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def peak_memory(device: str, into: dict[str, Any]) -> Iterator[None]:
    """Peak device memory allocated by torch inside the block, in MiB (CUDA only)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        into["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)


# -- inputs --------------------------------------------------------------------------------------------


def build_model(work: Path, bundle: Path, quick: bool) -> Path:
    """A random ModernBERT: base shape with the bundled MiniLM tokenizer, or the tiny test model (--quick)."""
    from mbret.retrieval.backbone import build_tiny_modernbert

    tokenizer_dir = bundle / "tokenizer"
    if quick or not tokenizer_dir.is_dir():
        return build_tiny_modernbert(work / "tiny-modernbert", hidden_size=64 if quick else 768)
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    target = work / "random-modernbert-base"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, model_input_names=["input_ids", "attention_mask"])
    tokenizer.model_max_length = 8192
    config = ModernBertConfig(  # the defaults are ModernBERT-base's shape
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(0)
    model = ModernBertModel(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def subset(dataset: Dataset, max_queries: int | None, max_docs: int | None) -> Dataset:
    """The first queries that have judgements, their relevant documents, and the corpus's first documents."""
    if max_queries is None and max_docs is None:
        return dataset
    qids = [q for q in dataset.queries if q in dataset.qrels][: max_queries or None]
    keep = {d for q in qids for d in dataset.qrels[q]}
    for doc_id in dataset.corpus:
        if max_docs is not None and len(keep) >= max_docs:
            break
        keep.add(doc_id)
    corpus = {d: v for d, v in dataset.corpus.items() if d in keep}
    qrels = {q: {d: r for d, r in dataset.qrels[q].items() if d in corpus} for q in qids}
    return Dataset(
        name=dataset.name,
        split=dataset.split,
        corpus=corpus,
        queries={q: dataset.queries[q] for q in qids},
        qrels=qrels,
    )


# -- comparisons ---------------------------------------------------------------------------------------


def compare_rankings(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> dict[str, float]:
    """How far two searches of the same queries agree: identical top-10 lists, top-k overlap, score gap."""
    same_top10 = np.mean([[d for d, _ in x[:10]] == [d for d, _ in y[:10]] for x, y in zip(a, b)])
    overlap = np.mean([len({d for d, _ in x} & {d for d, _ in y}) / max(len(x), 1) for x, y in zip(a, b)])
    other = [dict(y) for y in b]
    gaps = [abs(s - scores[d]) for x, scores in zip(a, other) for d, s in x if d in scores]
    return {
        "identical_top10": round(float(same_top10), 4),
        "topk_overlap": round(float(overlap), 4),
        "max_score_gap": float(max(gaps, default=0.0)),
    }


def ndcg10(dataset: Dataset, qids: list[str], hits: list[list[tuple[str, float]]]) -> float:
    run = {q: dict(row) for q, row in zip(qids, hits)}
    return round(evaluate_run({q: dataset.qrels[q] for q in qids}, run, ["ndcg@10"])[0]["ndcg@10"], 4)


def timed_search(index: Any, queries: list[torch.Tensor], k: int, device: str, **kwargs: Any) -> tuple[Any, float]:
    index.search(queries[:2], k=k, **kwargs)  # warm-up: copies to the device, builds derived state
    sync(device)
    start = time.perf_counter()
    hits = index.search(queries, k=k, **kwargs)
    sync(device)
    return hits, len(queries) / (time.perf_counter() - start)


# -- stages --------------------------------------------------------------------------------------------


def stage_env(device: str) -> dict[str, Any]:
    from mbret.eval.manifest import library_versions
    from mbret.retrieval.backbone import choose_attn_implementation, flash_attn_available

    info: dict[str, Any] = {
        **library_versions(),
        "torch_cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "flash_attn": flash_attn_available(),
        "attn_implementation": choose_attn_implementation(device),
        "numpy": np.__version__,
    }
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    return info


def stage_dense(model: Path, dataset: Dataset, device: str, agreement_docs: int) -> dict[str, Any]:
    from mbret.eval.runner import evaluate
    from mbret.retrieval import Retriever
    from mbret.retrieval.dense import DenseEncoder

    figures: dict[str, Any] = {}
    texts = [doc_text(d) for d in dataset.corpus.values()]
    with peak_memory(device, figures):
        retriever = Retriever.build(dataset.corpus, str(model), device=device, show_progress=False)
        result = evaluate(dataset, retriever, show_progress=False, manifest={"note": "gpu_check"})
    encoder = retriever.encoder
    tokens = sum(
        len(ids) for ids in encoder.model.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    )
    seconds = retriever.timings["encode_corpus_s"]
    figures |= {
        "dtype": str(next(encoder.model.parameters()).dtype),
        "docs": len(texts),
        "tokens": tokens,
        "encode_s": round(seconds, 2),
        "docs_per_s": round(len(texts) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "ndcg@10_random_model": round(result.metrics["ndcg@10"], 4),
    }
    sample = texts[:agreement_docs]
    reference = DenseEncoder.load(str(model), device="cpu", dtype="float32").encode_corpus(sample, show_progress=False)
    for dtype in ("float32", "bfloat16"):
        vectors = DenseEncoder.load(str(model), device=device, dtype=dtype).encode_corpus(sample, show_progress=False)
        figures[f"min_cosine_{dtype}_vs_cpu_fp32"] = round(float((vectors * reference).sum(1).min()), 6)
    return figures


def stage_colbert(model: Path, dataset: Dataset, device: str, work: Path) -> dict[str, Any]:
    from mbret.indexes import ExactMaxSimIndex
    from mbret.retrieval import Retriever
    from mbret.retrieval.colbert import ColBERTEncoder

    figures: dict[str, Any] = {}
    encoder = ColBERTEncoder.load(str(model), device=device, document_length=300)
    retriever = Retriever(encoder=encoder, index=ExactMaxSimIndex(encoder.dimension))
    with peak_memory(device, figures):
        retriever.add(dataset.corpus, show_progress=False)
    retriever.save(work / "exact", replace=True)
    qids = list(dataset.queries)
    sync(device)
    start = time.perf_counter()
    queries = encoder.encode_queries([dataset.queries[q] for q in qids])
    sync(device)
    query_seconds = time.perf_counter() - start
    torch.save({"qids": qids, "queries": queries}, work / "queries.pt")
    seconds = retriever.timings["encode_corpus_s"]
    return figures | {
        "docs": len(dataset.corpus),
        "token_vectors": retriever.index.num_tokens,
        "encode_s": round(seconds, 2),
        "docs_per_s": round(len(dataset.corpus) / seconds, 1),
        "token_vectors_per_s": round(retriever.index.num_tokens / seconds),
        "queries_per_s_encode": round(len(qids) / query_seconds, 1),
    }


def load_queries(work: Path) -> tuple[list[str], list[torch.Tensor]]:
    saved = torch.load(work / "queries.pt", weights_only=True)
    return saved["qids"], saved["queries"]


def stage_exact(dataset: Dataset, device: str, work: Path, cpu_queries: int) -> dict[str, Any]:
    from mbret.indexes import ExactMaxSimIndex

    qids, queries = load_queries(work)
    figures: dict[str, Any] = {"queries": len(qids)}
    index, _ = ExactMaxSimIndex.load(work / "exact")
    index.to(device)
    with peak_memory(device, figures):
        hits, qps = timed_search(index, queries, 100, device)
    figures |= {"device_qps_k100": round(qps, 1), "device_ndcg@10": ndcg10(dataset, qids, hits)}
    if device != "cpu":
        for chunk in (1 << 16, 1 << 18, 1 << 20):
            _, chunk_qps = timed_search(index, queries, 100, device, chunk_tokens=chunk)
            figures[f"device_qps_k100_chunk{chunk}"] = round(chunk_qps, 1)
        figures["resident_on_device"] = index._resident is not None
    n = min(cpu_queries, len(qids))
    cpu_index, _ = ExactMaxSimIndex.load(work / "exact")
    cpu_hits, cpu_qps = timed_search(cpu_index, queries[:n], 100, "cpu")
    figures |= {"cpu_queries": n, "cpu_qps_k100": round(cpu_qps, 2), "device_over_cpu": round(qps / cpu_qps, 1)}
    return figures | compare_rankings(hits[:n], cpu_hits)


def stage_plaid(dataset: Dataset, device: str, work: Path, cpu_queries: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from plaid_search import build_plaid_from_npy

    from mbret.indexes import PlaidIndex

    qids, queries = load_queries(work)
    n = min(cpu_queries, len(qids))
    figures: dict[str, Any] = {}
    for nbits in (2, 4):
        start = time.perf_counter()
        build_plaid_from_npy(str(work / "exact"), 1.0, nbits, str(work / f"plaid{nbits}"))
        figures[f"nbits{nbits}_build_s"] = round(time.perf_counter() - start, 1)
        for k in (10, 100):
            index, _ = PlaidIndex.load(work / f"plaid{nbits}")
            index.to(device)
            hits, qps = timed_search(index, queries, k, device)
            cpu_index, _ = PlaidIndex.load(work / f"plaid{nbits}")
            cpu_hits, cpu_qps = timed_search(cpu_index, queries[:n], k, "cpu")
            tag = f"nbits{nbits}_k{k}"
            figures |= {
                f"{tag}_device_qps": round(qps, 1),
                f"{tag}_cpu_qps": round(cpu_qps, 1),
                f"{tag}_device_ndcg@10": ndcg10(dataset, qids, hits),
                **{f"{tag}_{key}": value for key, value in compare_rankings(hits[:n], cpu_hits).items()},
            }
    return figures


def stage_cli(model: Path, data: Path, device: str, work: Path) -> dict[str, Any]:
    out = work / "cli-eval"
    command = [sys.executable, "-m", "mbret.cli", "eval", str(data), "--model", str(model), "--mode", "colbert"]
    command += ["--index-type", "plaid", "--device", device, "--output", str(out)]
    start = time.perf_counter()
    evaluated = subprocess.run(command, capture_output=True, text=True)
    figures: dict[str, Any] = {"eval_rc": evaluated.returncode, "eval_s": round(time.perf_counter() - start, 1)}
    if evaluated.returncode:
        figures["eval_stderr"] = evaluated.stderr[-1500:]
    else:
        result = json.loads((out / "results.json").read_text())
        figures |= {
            "eval_ndcg@10_random_model": round(result["metrics"]["ndcg@10"], 4),
            "eval_device": result["settings"]["device"],
            "eval_timings": result["timings"],
        }
    search = [sys.executable, "-m", "mbret.cli", "search", str(work / "exact"), "cancer risk", "-k", "3"]
    searched = subprocess.run([*search, "--device", device], capture_output=True, text=True)
    figures |= {"search_rc": searched.returncode, "search_stdout": searched.stdout[-600:]}
    if searched.returncode:
        figures["search_stderr"] = searched.stderr[-1500:]
    if evaluated.returncode or searched.returncode:
        raise RuntimeError(f"CLI failed: eval rc {evaluated.returncode}, search rc {searched.returncode}")
    return figures


def long_texts(dataset: Dataset, tokenizer: Any, count: int, tokens: int) -> list[str]:
    """`count` texts of at least `tokens` tokens, each a different run of SciFact documents glued together."""
    docs = [doc_text(d) for d in dataset.corpus.values()]
    lengths = [len(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    texts, current, have, i = [], [], 0, 0
    while len(texts) < count:
        current.append(docs[i % len(docs)])
        have += lengths[i % len(docs)]
        i += 1
        if have >= tokens + 64:
            texts.append(" ".join(current))
            current, have = [], 0
    return texts


def stage_long_docs(model: Path, dataset: Dataset, device: str, count: int) -> dict[str, Any]:
    from mbret.retrieval.colbert import ColBERTEncoder
    from mbret.retrieval.dense import DenseEncoder

    figures: dict[str, Any] = {"docs": count}
    dense = DenseEncoder.load(str(model), device=device, max_length=8192)
    texts = long_texts(dataset, dense.model.tokenizer, count, 8192)
    lengths = [len(ids) for ids in dense.model.tokenizer(texts, truncation=True, max_length=8192)["input_ids"]]
    figures["dense_tokens_per_doc"] = sorted(set(lengths))
    stats: dict[str, Any] = {}
    with peak_memory(device, stats):
        dense.encode_corpus(texts[:1], show_progress=False)  # warm-up
        sync(device)
        start = time.perf_counter()
        batched = dense.encode_corpus(texts, show_progress=False)
        sync(device)
        seconds = time.perf_counter() - start
    alone = np.concatenate([dense.encode_corpus([t], show_progress=False) for t in texts[:2]])
    figures |= {
        "dense_peak_gpu_mib": stats.get("peak_gpu_mib"),
        "dense_tokens_per_s": round(sum(lengths) / seconds),
        "dense_min_cosine_batched_vs_alone": round(float((batched[:2] * alone).sum(1).min()), 6),
    }
    del dense
    colbert = ColBERTEncoder.load(str(model), device=device, document_length=8190)
    stats = {}
    with peak_memory(device, stats):
        colbert.encode_corpus(texts[:1], show_progress=False)
        sync(device)
        start = time.perf_counter()
        bags = colbert.encode_corpus(texts, show_progress=False)
        sync(device)
        seconds = time.perf_counter() - start
    alone_bags = [colbert.encode_corpus([t], show_progress=False)[0] for t in texts[:2]]
    vectors = sum(len(b) for b in bags)
    figures |= {
        "colbert_peak_gpu_mib": stats.get("peak_gpu_mib"),
        "colbert_vectors_per_doc_max": max(len(b) for b in bags),
        "colbert_token_vectors_per_s": round(vectors / seconds),
        "colbert_max_abs_diff_batched_vs_alone": float(max((a - b).abs().max() for a, b in zip(bags[:2], alone_bags))),
        "colbert_same_shapes_batched_vs_alone": all(a.shape == b.shape for a, b in zip(bags[:2], alone_bags)),
    }
    return figures


def stage_train(model: Path, data: Path, device: str, work: Path, steps: int) -> dict[str, Any]:
    """`mbret train --preset paper-colbert-base` for a few steps on the bundled MS MARCO sample (10 queries, 1
    positive + 25 negatives with teacher scores): samples/s and peak memory of the paper's ColBERT recipe."""
    out = work / "train"
    command = [sys.executable, "-m", "mbret.cli", "train", "--preset", "paper-colbert-base", "--model", str(model)]
    command += ["--data", str(data), "--n-ways", "26", "--max-steps", str(steps), "--device", device]
    command += ["--output", str(out), "--save-steps", "100000"]
    if device == "cpu":
        command.append("--no-bf16")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"mbret train exited {done.returncode}: {done.stderr[-1500:]}")
    log = json.loads((out / "train_log.json").read_text())
    keys = ("steps", "seconds", "samples_per_second", "effective_batch_size", "peak_accelerator_memory_mb", "losses")
    return {key: log[key] for key in keys}


def summary(stages: dict[str, dict[str, Any]]) -> str:
    lines = ["| stage | ok | seconds | figures |", "|---|---|---|---|"]
    for name, entry in stages.items():
        figures = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("ok", "seconds", "search_stdout"))
        lines.append(f"| {name} | {entry['ok']} | {entry['seconds']} | {figures} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="gpu_check.json and gpu_check.md go here")
    parser.add_argument("--bundle", type=Path, default=REPO / ".gpu-bundle")
    parser.add_argument("--data", type=Path, help="BEIR directory (default: the bundle's SciFact, else ../shared)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mbret-gpu-check"))
    parser.add_argument("--quick", action="store_true", help="tiny model and a small slice: a dry run of the script")
    parser.add_argument("--max-queries", type=int)
    parser.add_argument("--max-docs", type=int)
    parser.add_argument("--cpu-queries", type=int, default=100, help="queries also searched on the CPU")
    parser.add_argument("--long-docs", type=int, default=32, help="8192-token documents per head")
    parser.add_argument("--train-steps", type=int, default=30, help="steps of the paper-colbert-base recipe")
    parser.add_argument("--stages", default="env,dense,colbert,exact,plaid,cli,long_docs,train")
    args = parser.parse_args()
    if args.quick:
        args.max_queries, args.max_docs = args.max_queries or 20, args.max_docs or 150
        args.long_docs, args.cpu_queries = min(args.long_docs, 2), min(args.cpu_queries, 20)
        args.train_steps = min(args.train_steps, 3)
    data = args.data or next(
        (p for p in (args.bundle / "scifact", REPO.parent / "shared/data/beir/scifact") if p.is_dir()), None
    )
    if data is None:
        parser.error("no SciFact: run scripts/gpu_bundle.sh or pass --data")
    train_data = next(
        (
            p
            for p in (args.bundle / "hardneg-10q.jsonl", REPO.parent / "shared/data/msmarco-sample/hardneg-10q.jsonl")
            if p.is_file()
        ),
        args.bundle / "hardneg-10q.jsonl",
    )
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = subset(load_dataset(data), args.max_queries, args.max_docs)
    data_dir = data
    if args.max_queries is not None or args.max_docs is not None:  # the CLI stage reads a directory
        data_dir = args.work / "data"
        write_beir_files(data_dir, dataset, "test")
    model = build_model(args.work, args.bundle, args.quick)
    print(f"model {model}, data {data_dir}: {len(dataset.corpus)} docs, {len(dataset.queries)} queries", flush=True)
    report = Report(args.out)
    stages = {
        "env": lambda: stage_env(args.device),
        "dense": lambda: stage_dense(model, dataset, args.device, agreement_docs=16),
        "colbert": lambda: stage_colbert(model, dataset, args.device, args.work),
        "exact": lambda: stage_exact(dataset, args.device, args.work, args.cpu_queries),
        "plaid": lambda: stage_plaid(dataset, args.device, args.work, args.cpu_queries),
        "cli": lambda: stage_cli(model, data_dir, args.device, args.work),
        "long_docs": lambda: stage_long_docs(model, dataset, args.device, args.long_docs),
        "train": lambda: stage_train(model, train_data, args.device, args.work, args.train_steps),
    }
    for name in args.stages.split(","):
        report.run(name, stages[name])
    (args.out / "gpu_check.md").write_text(summary(report.stages))
    print(summary(report.stages))
    return 0 if all(entry["ok"] for entry in report.stages.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
