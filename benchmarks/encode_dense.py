"""mbret's corpus encoding against plain `SentenceTransformer.encode`, same model, same corpus, one run.

Baseline: `SentenceTransformer(model).encode(texts, batch_size=B, normalize_embeddings=True)` in float32.
Prints tokens/s for each (tokens = what the model actually sees after truncation), the ratio, and how far
mbret's embeddings are from the float32 baseline's (they must agree). With `--dtype bfloat16`, plain
`SentenceTransformer` loaded in that dtype is timed too, so the gain from the dtype and the gain from
mbret's batching show apart.

    python benchmarks/encode_dense.py --data ../shared/data/beir/scifact --model minilm
    python benchmarks/encode_dense.py --data ../shared/data/beir/scifact --model minilm --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mbret.data.datasets import doc_text, load_corpus
from mbret.retrieval import DenseEncoder
from mbret.retrieval.backbone import choose_dtype, resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact", help="BEIR dir or corpus.jsonl")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="mbret's dtype: float32 (default) or bfloat16")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = [doc_text(d) for d in load_corpus(args.data).values()][: args.limit]
    ours = DenseEncoder.load(args.model, device=args.device, dtype=args.dtype)
    dtype = choose_dtype(args.device, args.dtype)
    plains = {"float32": SentenceTransformer(resolve_model_path(args.model), device=args.device)}
    if dtype != torch.float32:
        plains[str(dtype).removeprefix("torch.")] = SentenceTransformer(
            resolve_model_path(args.model), device=args.device, model_kwargs={"dtype": dtype}
        )
    for plain in plains.values():
        plain.max_seq_length = ours.max_length
    tokens = sum(
        len(ids) for ids in ours.model.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]
    )
    print(
        f"{len(texts)} documents, {tokens} tokens after truncation to {ours.max_length}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
    )

    ours.encode(texts[:32], batch_size=args.batch_size)  # warm-up, every side
    for plain in plains.values():
        plain.encode(texts[:32], batch_size=args.batch_size)

    seconds, outputs = {}, {}
    for name, plain in plains.items():
        start = time.perf_counter()
        outputs[name] = plain.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        seconds[f"SentenceTransformer.encode {name}"] = time.perf_counter() - start
    start = time.perf_counter()
    embeddings = ours.encode_corpus(texts, batch_size=args.batch_size, show_progress=False)
    seconds[f"mbret encode_corpus {args.dtype}"] = time.perf_counter() - start

    baseline = seconds["SentenceTransformer.encode float32"]
    for name, t in seconds.items():
        print(f"{name:<38} {t:8.1f} s  {tokens / t:10.0f} tokens/s  {baseline / t:6.2f}x plain float32")
    reference = np.asarray(outputs["float32"], dtype=np.float32)
    cosines = (embeddings * reference).sum(axis=1)
    print(
        f"against plain float32: max |difference| {np.abs(embeddings - reference).max():.2e}, "
        f"lowest cosine {cosines.min():.6f}"
    )


if __name__ == "__main__":
    main()
