"""Several processes as one run, on ``torch.distributed`` as launched by ``torchrun``.

``torchrun --nproc_per_node N -m condvae train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address; ``setup`` joins the process group (gloo on CPU, NCCL on CUDA, each rank on
its own GPU) the first time a run starts. Without those variables everything here is a no-op
and a run is one process, as before.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from condvae.errors import CondVAEError


def launched() -> bool:
    """Whether this process was started by torchrun (or anything that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | torch.device = "cpu") -> None:
    """Join the process group of a torchrun launch, once; nothing for a single process."""
    if not launched() or dist.is_initialized():
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:  # "cuda" then means this rank's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group("nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as err:
        raise CondVAEError(f"distributed: could not join the torchrun process group ({err})") from None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """The rank that writes files and logs (rank 0; the only one without torchrun)."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def total(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks (itself for a single process)."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


__all__ = ["barrier", "is_main", "launched", "rank", "setup", "total", "world"]
