"""End to end: the real dvc.yaml on the `tiny` parameter set, in a scratch git repo."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / "tests" / "stages_tiny.yaml", repo / "stages.yaml")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


HEADS = {"linear", "acar", "acfb", "lfb"}


def test_dvc_trains_every_head_of_the_params():
    """dvc.yaml's `models` (the heads it trains, with their banks) = stages.yaml's heads."""
    models = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["vars"][0]["models"])
    for params in (ROOT / "stages.yaml", ROOT / "tests" / "stages_tiny.yaml"):
        assert set(yaml.safe_load(params.read_text())["heads"]) == models == HEADS


def test_repro_then_nothing_to_do_then_only_what_changed(repo):
    out = dvc(repo, "repro")
    assert ran(out) == {"synth", "detect", "extract", "bank_lfb", "bank_acfb",
                        *(f"{stage}@{head}" for stage in ("train", "eval") for head in HEADS)}
    for head in HEADS:
        metrics = json.loads((repo / f"data/eval/{head}/metrics.json").read_text())
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert set(metrics["per_superclass"]) == {"pose", "object"}
    assert "bytes/keyframe" in out

    again = dvc(repo, "repro")
    assert ran(again) == set() and "Data and pipelines are up to date" in again

    shown = dvc(repo, "metrics", "show")
    assert "data/eval/linear/metrics.json" in shown and "mAP" in shown

    # an acar parameter reruns acar, and the acfb bank (made by the trained acar) and all
    # after it; nothing else (not the other heads, not the lfb bank)
    params = yaml.safe_load((repo / "stages.yaml").read_text())
    params["heads"]["acar"]["seed"] = 1
    (repo / "stages.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro")) == {"train@acar", "eval@acar", "bank_acfb", "train@acfb",
                                       "eval@acfb"}

    assert ran(dvc(repo, "repro", "--force", "--single-item", "bank_lfb")) == {"bank_lfb"}
