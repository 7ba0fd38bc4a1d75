"""How many threads one acar process gives torch (intra-op) and OpenMP: the one place.

torch's own default is every CPU the process may use.  That is right for one process alone,
and very wrong for several side by side on the same CPUs (DVC running stages at once, the
shards of a SLURM array sharing a node, several ``--shard i/N`` started by hand): with each
process running as many busy-waiting OpenMP threads as there are cores, a training epoch on
2 cores took 33 s instead of 3 s (issue 21).  The policy, first match wins:

1. ``acar --threads N`` (a global option: ``acar --threads 1 train ...``);
2. ``OMP_NUM_THREADS`` (what OpenMP and torch already obey; set it in a job script);
3. ``SLURM_CPUS_PER_TASK`` (a SLURM job or array task: the CPUs it was given);
4. the CPUs this process may use (the affinity mask, capped by a cgroup CPU quota, as in a
   container) divided by ``ACAR_JOBS``, the number of acar processes meant to share them
   (default 1), at least 1.

On a machine of its own the default is what torch would choose (so numbers do not move);
whoever runs N processes at once says so with ``ACAR_JOBS=N`` (or ``--threads``).
:func:`setup` (called by the ``acar`` group) leaves a run alone when the count is what
torch would pick by itself; otherwise :func:`configure` exports it as ``OMP_NUM_THREADS``
and ``MKL_NUM_THREADS`` before torch is imported (so torch and any child process take it)
and calls ``torch.set_num_threads`` if torch is already loaded.  Nothing heavy is imported
(scoring a file imports no torch).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ENV_JOBS = "ACAR_JOBS"


def usable_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup v2 quota."""
    cpus = _affinity()
    try:
        quota, period = (Path(cgroup_root) / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _affinity() -> int:
    """CPUs of the affinity mask: what OpenMP, so torch, uses by default."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _positive(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def default_threads(env: Mapping[str, str] | None = None, cpus: int | None = None
                    ) -> tuple[int, str]:
    """``(threads, why)`` under the policy of this module's doc, without ``--threads``."""
    env = os.environ if env is None else env
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        n = _positive(env, name)
        if n is not None:
            return n, name
    cpus = usable_cpus() if cpus is None else cpus
    jobs = _positive(env, ENV_JOBS) or 1
    return max(1, cpus // jobs), f"{cpus} usable CPUs / {ENV_JOBS}={jobs}"


def resolve(requested: int | None, env: Mapping[str, str] | None = None,
            cpus: int | None = None) -> tuple[int, str]:
    """``(threads, why)``: ``requested`` (``--threads``) if given, else the default."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return requested, "--threads"
    return default_threads(env, cpus)


def setup(requested: int | None = None) -> tuple[int, str]:
    """Resolve the count and :func:`configure` it unless it is what torch would pick by
    itself (so a default run, or a caller that set torch's threads, is left alone)."""
    n, why = resolve(requested)
    omp = _positive(os.environ, "OMP_NUM_THREADS")
    torch_default = omp if omp is not None else _affinity()
    if requested is not None or n != torch_default:
        configure(n)
    return n, why


def configure(threads: int) -> None:
    """Use ``threads`` in this process and its children: torch, OpenMP, MKL."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


__all__ = ["ENV_JOBS", "configure", "default_threads", "resolve", "setup", "usable_cpus"]
