"""What `mbret info DIR` reports about an index directory: its manifest, document counts, bytes on disk by
part, metadata fields with their types and counts, and the generation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mbret.indexes import load_index


def _part(role: str) -> str:
    """A file's part: its manifest role without a chunk number (`codes_3` is part of `codes`)."""
    return re.sub(r"_\d+$", "", role)


def index_info(path: str | Path) -> dict[str, Any]:
    """The facts `mbret info --json` prints: `num_docs` (every internal id given, deleted ones included),
    `num_live`, `num_deleted`, `num_tokens` (ColBERT indexes), `bytes` (by part, and `total`),
    `generation`, `metadata_fields` (name -> type -> live documents), `store_text` and the `manifest`."""
    path = Path(path)
    index, manifest = load_index(path)
    sizes: dict[str, int] = {}
    for role, name in manifest.files.items():
        file = path / name
        size = file.stat().st_size
        if role == "documents":
            size += sum(f.stat().st_size for f in path.glob(f"{name}-wal"))
        sizes[_part(role)] = sizes.get(_part(role), 0) + size
    sizes["manifest"] = (path / "manifest.json").stat().st_size
    sizes = dict(sorted(sizes.items()))
    sizes["total"] = sum(sizes.values())
    info: dict[str, Any] = {
        "path": str(path),
        "kind": manifest.kind,
        "mode": manifest.mode,
        "index_type": manifest.index_type,
        "model": manifest.model,
        "dimension": manifest.dimension,
        "generation": manifest.generation,
        "num_docs": len(index.doc_ids),
        "num_live": len(index),
        "num_deleted": len(index.doc_ids) - len(index),
    }
    if manifest.mode == "colbert":
        info["num_tokens"] = int(index.num_tokens)
    if manifest.mode == "bm25":
        info["num_terms"] = int(index.num_terms)
    info["bytes"] = sizes
    info["store_text"] = index.documents.store_text
    info["metadata_fields"] = index.documents.field_stats()
    info["manifest"] = manifest.to_json()
    return info


def format_info(info: dict[str, Any]) -> str:
    """The plain-text form of `index_info`, for the terminal."""
    what = (
        f"bm25 index ({info['num_terms']:,} terms)"
        if "num_terms" in info
        else f"{info['mode']} {info['index_type']} index of {info['model']} ({info['dimension']}-d)"
    )
    lines = [
        f"{info['path']}: {what}, generation {info['generation']}",
        f"documents: {info['num_live']:,} live, {info['num_deleted']:,} deleted ({info['num_docs']:,} ids given)"
        + (f"; {info['num_tokens']:,} token vectors" if "num_tokens" in info else ""),
        "text stored: " + ("yes" if info["store_text"] else "no (ids and metadata only)"),
        "bytes on disk:",
    ]
    width = max(len(part) for part in info["bytes"])
    lines += [f"  {part.ljust(width)}  {size:>14,}" for part, size in info["bytes"].items()]
    fields = info["metadata_fields"]
    if fields:
        lines.append("metadata fields:")
        width = max(len(name) for name in fields)
        for name, types in fields.items():
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in types.items())
            lines.append(f"  {name.ljust(width)}  {kinds}")
    else:
        lines.append("metadata fields: none")
    params = info["manifest"].get("index_params") or {}
    if params:
        lines.append("index params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    return "\n".join(lines)
