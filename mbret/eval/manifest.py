"""What a result needs to be rerun: library versions, the exact weights, device and dtype, the settings."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from typing import Any

import torch

import mbret


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    return {
        "mbret": mbret.__version__,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "sentence-transformers": _version("sentence-transformers"),
        "faiss": _version("faiss-cpu") or _version("faiss-gpu"),
        "bm25s": _version("bm25s"),
        "python": platform.python_version(),
    }


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes) of the model as evaluated.

    Hashing the loaded weights, not files, covers hub ids, local dirs and a ColBERT projection that was
    initialised from a seed alike.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def model_dtype(module: torch.nn.Module) -> str:
    param = next(module.parameters(), None)
    return str(param.dtype).removeprefix("torch.") if param is not None else "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_manifest(encoder: Any, seed: int = 0) -> dict[str, Any]:
    """Versions, model id, weights hash, device and dtype of an encoder (dense or ColBERT; bm25 has no
    weights, its settings are the index's parameters)."""
    model = encoder.model
    if model is None:
        return {"versions": library_versions(), "model": encoder.name, "weights_sha256": None, "seed": seed}
    return {
        "versions": library_versions(),
        "model": encoder.name,
        "weights_sha256": weights_sha256(model),
        "device": device_name(encoder.device),
        "dtype": model_dtype(model),
        "seed": seed,
    }
