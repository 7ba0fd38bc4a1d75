"""torch.distributed for ``torchrun``: set-up, tear-down and two reductions.

With one process (no ``WORLD_SIZE`` > 1 in the environment) nothing is initialised and
every helper is a no-op, so single-process training is the ordinary path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()   # the ordinary, single-process case


def setup() -> Dist:
    """Join the process group that torchrun describes (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def all_reduce_sum(value: float, d: Dist) -> float:
    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def cleanup(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
