"""The processes of one job under `torchrun` (`torch.distributed`): who this process is (`World`) and the
few collectives an index build needs, each a no-op for a single process.

Why torch.distributed and not a pool or a scheduler: it is the engine our users already launch training
with (`torchrun --nnodes N --nproc-per-node G`), it spans nodes, and its backends move tensors the way the
devices want (nccl between GPUs, gloo on CPUs). Small objects travel as JSON in uint8 tensors rather than
through `all_gather_object`, which pickles.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mbret.errors import MbretError, ParameterError

# how long a rank waits at a collective for the others: a build's phases (encoding a shard) run between
# collectives, so this is the longest phase a rank may take longer than another
TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class World:
    """This process's place in the job: `rank` of `size` processes, `local_rank` on its node, the device
    it encodes on, and the backend of its collectives (None for a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str | None = None
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        return torch.device(self.device) if self.backend == "nccl" else torch.device("cpu")


def launched() -> bool:
    """Whether this process was started by `torchrun` (or another launcher that sets `WORLD_SIZE`) as one
    of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: str | None = None) -> World:
    """This process's `World`, joining the job's process group when launched as one of several. Each rank
    takes its node's GPU `LOCAL_RANK` (nccl) unless `device` says cpu or there is no GPU (gloo). A single
    process keeps `device` as given."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=device)
    if device is not None and "," in device:
        raise ParameterError(
            "device", f"{device}: several devices run in one process; in a job of several processes each takes one"
        )
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        device, backend = "cpu", "gloo"
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return World(rank, size, local_rank, device, backend)


def leave(world: World) -> None:
    """Leave the process group (at the end of a command)."""
    if world.backend is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()  # no rank tears its connections down while another still reads from them
            dist.destroy_process_group()


def node_threads(world: World) -> int:
    """Threads for work rank 0 does alone while the other ranks on its node wait at a collective (k-means):
    this process's threads times the ranks on the node, at most the CPUs. Under torchrun's default of one
    thread a rank, that is the threads a single process on the node runs with, so the codec is trained as
    `mbret index` in one process would train it."""
    before = torch.get_num_threads()
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if world.backend is not None else 1
    return max(before, min(before * ranks_here, os.cpu_count() or before))


def barrier(world: World) -> None:
    if world.backend is not None:
        import torch.distributed as dist

        dist.barrier()


def all_gather_json(world: World, value: Any) -> list[Any]:
    """Every rank's `value` (anything JSON can hold), in rank order, on every rank."""
    if world.backend is None:
        return [value]
    import torch.distributed as dist

    data = torch.frombuffer(bytearray(json.dumps(value).encode("utf-8")), dtype=torch.uint8)
    device = world._comm_device
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world.size)]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64, device=device))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: len(data)] = data.to(device)
    parts = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[: int(s)].cpu().numpy()).decode("utf-8")) for p, s in zip(parts, sizes)]


def gather_rows(world: World, rows: torch.Tensor) -> list[torch.Tensor] | None:
    """Every rank's `rows` (n_r, d) on rank 0, in rank order (None on the other ranks); n_r may differ."""
    if world.backend is None:
        return [rows]
    import torch.distributed as dist

    device = world._comm_device
    counts = all_gather_json(world, len(rows))
    longest = max(max(counts), 1)
    padded = torch.zeros(longest, *rows.shape[1:], dtype=rows.dtype, device=device)
    padded[: len(rows)] = rows.to(device)
    parts = [torch.empty_like(padded) for _ in range(world.size)] if world.is_main else None
    dist.gather(padded, parts, dst=0)
    if parts is None:
        return None
    return [p[:n].cpu() for p, n in zip(parts, counts)]


def broadcast_tensors(world: World, tensors: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    """Rank 0's `tensors` on every rank (the others pass None)."""
    if world.backend is None:
        assert tensors is not None
        return list(tensors)
    import torch.distributed as dist

    shapes = all_gather_json(
        world, [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in tensors] if tensors else None
    )[0]
    out = []
    for i, (shape, dtype) in enumerate(shapes):
        if world.is_main:
            assert tensors is not None
            tensor = tensors[i].contiguous().to(world._comm_device)
        else:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=world._comm_device)
        dist.broadcast(tensor, src=0)
        out.append(tensor.cpu())
    return out


def agree(world: World, error: str | None) -> None:
    """Fail on every rank if any rank failed: each passes its error (or None); all raise the first one, so
    a bad input stops every rank with the same one-line message instead of leaving the others waiting."""
    errors = [e for e in all_gather_json(world, error) if e]
    if errors:
        raise MbretError(errors[0])
