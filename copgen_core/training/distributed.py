"""Rank, world size and gradient averaging, only when ``torch.distributed`` is initialised.

Nothing here starts a process group: a launcher (``torchrun``) sets ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR`` and the CLI calls :func:`init_from_env`. Without one, every helper answers for a
single process, so the same trainer code runs alone or under DDP.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, which alone writes checkpoints, bundles and logs."""
    return rank() == 0


def local_rank() -> int:
    """``LOCAL_RANK`` from the launcher's environment (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: torch.device) -> bool:
    """Initialise the default process group if a launcher asked for more than one process.

    Uses NCCL for CUDA devices and Gloo otherwise; ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` come from the environment (``torchrun`` sets them).

    Returns
    -------
    bool
        True if a process group is (now) initialised.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(module)`` under a process group, else ``module`` itself."""
    if not is_distributed():
        return module
    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    inner = getattr(module, "module", None)
    return inner if isinstance(module, nn.parallel.DistributedDataParallel) and inner is not None else module


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics over ranks (identity without a process group)."""
    if not is_distributed() or not values:
        return values
    keys = list(values)  # every rank builds its metrics in the same order
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist(), strict=True))
