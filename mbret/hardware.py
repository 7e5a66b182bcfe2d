"""What this machine's CPU can do fast, asked once where a choice depends on it."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def cpu_has_native(dtype: torch.dtype, unknown: bool = True) -> bool:
    """Whether oneDNN has fast kernels for `dtype` on this CPU (bf16: AVX512-BF16 or AMX; fp16: AVX512-FP16
    or AMX-FP16). `unknown` answers for a torch without the query: yes where a wrong answer only costs a
    missing warning, no where it would pick a path that could run many times slower."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return probe is None or bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return unknown


def map_on_cores(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """`fn` over `items` on `workers` threads (default: torch's thread count).

    For work made of many small tensor operations (a query's PLAID stages, a query's rescoring), which split
    poorly across cores: an item per core beats torch's intra-op threads (docs/benchmarks.md). Torch's
    thread count is process-wide, so it is left alone (setting it to 1 meanwhile, as this once did, let two
    concurrent calls leave it at 1 for the whole process); the threads' own intra-op work costs PLAID a
    little and exact rescoring nothing (docs/benchmarks.md, "Concurrent writers and searchers"). Safe to
    call from several threads at once. `fn` must enter `torch.inference_mode()` itself if it needs it:
    worker threads do not inherit the caller's."""
    workers = min(workers or torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block on `threads` CPU threads, torch's intra-op pool and FAISS's OpenMP alike (None: as
    they are), then set both back. Not for a block that runs beside other threads' work: the counts are
    per process."""
    import faiss

    before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    if threads is None or threads < 1:
        yield before
        return
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
        faiss.omp_set_num_threads(faiss_before)


def release_freed_memory() -> bool:
    """Hand memory that Python and torch have freed back to the OS (glibc's `malloc_trim`); False where
    there is no glibc. Encoding leaves freed activations scattered through the heap, and glibc keeps them:
    trimming after each ColBERT chunk (with float16 chunks) lowers `mbret index`'s peak (docs/benchmarks.md)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (musl, macOS, Windows: nothing to call)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
