"""mbret's corpus encoding against plain `SentenceTransformer.encode`, same model, same corpus, one run.

Baseline: `SentenceTransformer(model).encode(texts, batch_size=B, normalize_embeddings=True)`.
Prints tokens/s for both (tokens = what the model actually sees after truncation), the ratio, and the
largest difference between the two sets of embeddings (they must agree).

    python benchmarks/encode_dense.py --data ../shared/data/beir/scifact --model minilm
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mbret.eval.data import doc_text, load_corpus
from mbret.retrieval import DenseEncoder
from mbret.retrieval.backbone import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/beir/scifact", help="BEIR dir or corpus.jsonl")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = [doc_text(d) for d in load_corpus(args.data).values()][: args.limit]
    ours = DenseEncoder.load(args.model, device=args.device)
    plain = SentenceTransformer(resolve_model_path(args.model), device=args.device)
    plain.max_seq_length = ours.max_length
    tokens = sum(
        len(ids) for ids in ours.model.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]
    )
    print(
        f"{len(texts)} documents, {tokens} tokens after truncation to {ours.max_length}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
    )

    ours.encode(texts[:32], batch_size=args.batch_size)  # warm-up, both sides
    plain.encode(texts[:32], batch_size=args.batch_size)

    start = time.perf_counter()
    baseline = plain.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    t_plain = time.perf_counter() - start
    start = time.perf_counter()
    embeddings = ours.encode_corpus(texts, batch_size=args.batch_size, show_progress=False)
    t_ours = time.perf_counter() - start

    print(f"SentenceTransformer.encode: {t_plain:8.1f} s  {tokens / t_plain:10.0f} tokens/s")
    print(f"mbret encode_corpus:        {t_ours:8.1f} s  {tokens / t_ours:10.0f} tokens/s")
    print(f"ratio (mbret / plain tokens/s): {t_plain / t_ours:.3f}")
    print(f"max |difference| between embeddings: {np.abs(embeddings - baseline).max():.2e}")


if __name__ == "__main__":
    main()
