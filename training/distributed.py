"""torch.distributed for training: process group from torchrun's environment, CLIP-style all-gather.

``torchrun --nproc_per_node N -m cezsar train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; :func:`setup` joins the group (gloo for CPU tensors, NCCL for CUDA ones). Without those
variables everything runs in one process and every helper here is the identity.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (idempotent)."""
    if env_world_size() <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())


def rank_device(device: str, info: DistInfo) -> str:
    """``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK``."""
    if device == "cuda" and info.enabled:
        return f"cuda:{info.local_rank}"
    return device


def _scalar_device() -> torch.device:
    """Where collective scalars live: NCCL only moves CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend()
        )
    return DistInfo()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0 (rank order); gradient flows through this rank's part only.

    As CLIP trains: the other ranks' rows are constants here, and each rank back-propagates into its own
    rows. With every rank computing the same global loss, the sum of the ranks' gradients is the
    gradient of the global batch (DDP averages it, so scale the loss by the world size). Ranks may hold
    different numbers of rows (a batch that lost an undecodable video).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    n = torch.tensor([len(x)], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    m = max(counts)
    local = x.detach()
    if len(local) < m:
        local = torch.cat([local, local.new_zeros((m - len(local), *local.shape[1:]))])
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.contiguous())
    out = [p[:c] for p, c in zip(parts, counts, strict=True)]
    out[dist.get_rank()] = x
    return torch.cat(out)


def mean_across_ranks(value: float) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_scalar_device())
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()
