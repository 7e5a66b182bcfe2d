"""What this machine's CPU can do fast, asked once where a choice depends on it."""

from __future__ import annotations

import torch


def cpu_has_native(dtype: torch.dtype, unknown: bool = True) -> bool:
    """Whether oneDNN has fast kernels for `dtype` on this CPU (bf16: AVX512-BF16 or AMX; fp16: AVX512-FP16
    or AMX-FP16). `unknown` answers for a torch without the query: yes where a wrong answer only costs a
    missing warning, no where it would pick a path that could run many times slower."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return probe is None or bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return unknown
