"""Process-group setup from torchrun's environment, and the few collectives the trainer uses.

torchrun (`python -m torch.distributed.run --nproc_per_node N ...`) sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without them (plain `python ...`) everything here is a
no-op for one process, so the trainer has a single code path. Backend: NCCL when the device is a
GPU, gloo on CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_distributed(device: str = "auto") -> torch.device:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent) and return this rank's device.

    `device`: "auto" (cuda:<LOCAL_RANK> when CUDA is available, else cpu), "cpu", "cuda"
    (cuda:<LOCAL_RANK>) or an explicit "cuda:<index>".
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local_rank()}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL and the CUDA RNG helpers use the current device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            init_method="env://",
            device_id=dev if dev.type == "cuda" else None,
        )
    return dev


def world_size() -> int:
    """Number of processes in the group (1 without torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its node, which selects its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on the one rank that logs and writes files."""
    return rank() == 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks, in place; returns it for chaining."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """`[obj of rank 0, obj of rank 1, ...]` on every rank (picklable objects, small ones only)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if world_size() > 1:
        dist.barrier()
