"""torch.distributed for ``torchrun``: set-up, tear-down and two reductions; and
:func:`worker_init`, which makes DataLoader workers die with their parent.

With one process (no ``WORLD_SIZE`` > 1 in the environment) nothing is initialised and
every helper is a no-op, so single-process training is the ordinary path.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
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


# ---- DataLoader workers that die with their parent --------------------------------------

PR_SET_PDEATHSIG = 1     # linux/prctl.h


def worker_init(then: Callable[[int], None] | None = None) -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn`` that makes each worker die with the process that
    made it (then calls ``then(worker_id)``, if given).

    A ``kill -9`` of the parent leaves torch's workers alive until they next poll it
    (every 5 s, after finishing the batches they hold).  On Linux the kernel sends the
    worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``; the signal follows
    the thread that forked it, so the loader must be iterated from a long-lived thread:
    every loader here is iterated by the main thread); elsewhere, or if prctl fails, a
    daemon thread polls the parent's pid twice a second.
    """
    return functools.partial(_die_with_parent, os.getpid(), then)


def _die_with_parent(parent: int, then: Callable[[int], None] | None, worker_id: int) -> None:
    if not (sys.platform.startswith("linux") and _pdeathsig()):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                         name="parent-watchdog").start()
    if os.getppid() != parent:        # it died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
    if then is not None:
        then(worker_id)


def _pdeathsig() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGKILL)
