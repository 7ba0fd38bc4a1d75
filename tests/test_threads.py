"""pipeline/threads.py: the thread-count policy and the `acar --threads` option."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from pipeline import threads


def test_policy_order():
    env = {"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "5", "ACAR_JOBS": "2"}
    assert threads.resolve(7, env, cpus=16) == (7, "--threads")
    assert threads.resolve(None, env, cpus=16) == (3, "OMP_NUM_THREADS")
    assert threads.resolve(None, {**env, "OMP_NUM_THREADS": ""}, 16) == (5, "SLURM_CPUS_PER_TASK")
    n, why = threads.resolve(None, {"ACAR_JOBS": "4"}, cpus=16)
    assert n == 4 and "ACAR_JOBS=4" in why
    assert threads.resolve(None, {"ACAR_JOBS": "8"}, cpus=2)[0] == 1  # never 0
    assert threads.resolve(None, {"ACAR_JOBS": "junk", "OMP_NUM_THREADS": "0"}, cpus=6)[0] == 6
    with pytest.raises(ValueError, match="--threads"):
        threads.resolve(0, {}, cpus=2)


def test_cgroup_quota_caps_the_affinity_mask(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs -> 2
    assert threads.usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_setup_leaves_a_default_run_alone(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SLURM_CPUS_PER_TASK", "ACAR_JOBS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cpus", lambda: len(os.sched_getaffinity(0)))
    threads.setup(None)
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


def test_threads_option_sets_torch_and_children(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    try:
        result = CliRunner().invoke(cli, ["--threads", "3", "eval", "--help"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3
        assert os.environ["OMP_NUM_THREADS"] == "3" == os.environ["MKL_NUM_THREADS"]
    finally:
        torch.set_num_threads(before)
    bad = CliRunner().invoke(cli, ["--threads", "0", "eval", "--help"])
    assert bad.exit_code != 0 and "--threads" in bad.output
