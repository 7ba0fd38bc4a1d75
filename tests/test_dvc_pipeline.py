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
    for package in ("cli", "pipeline"):                         # code deps of the stages
        shutil.copytree(ROOT / package, repo / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")   # the shipped remote
    return repo


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


HEADS = {"linear", "actor_actor", "acrn", "acar", "acfb", "lfb"}
# heads of stages.yaml that the default dvc.yaml does not train (issue 17: methods/dvc.yaml)
NOT_IN_DEFAULT_DAG = {"atr", "s_only", "t_only"}


def test_dvc_trains_every_head_of_the_params():
    """dvc.yaml's `models` (the heads it trains, with their banks) = stages.yaml's heads."""
    models = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["vars"][0]["models"])
    for params in (ROOT / "stages.yaml", ROOT / "tests" / "stages_tiny.yaml"):
        heads = set(yaml.safe_load(params.read_text())["heads"]) - NOT_IN_DEFAULT_DAG
        assert heads == models == HEADS


def test_repro_then_nothing_to_do_then_only_what_changed(repo):
    out = dvc(repo, "repro")
    per_head = {f"{stage}@{head}" for stage in ("train", "eval") for head in HEADS}
    assert ran(out) == {"synth", "detect", "extract", "bank_lfb", "bank_acfb", *per_head,
                        "report"}
    for head in HEADS:
        metrics = json.loads((repo / f"data/eval/{head}/metrics.json").read_text())
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert set(metrics["per_superclass"]) <= {"pose", "context", "relation", "longterm",
                                                  "temporal", "target"}
        assert {"pose", "context"} <= set(metrics["per_superclass"])
    md = (repo / "data/report/report.md").read_text()
    assert "| *chance* |" in md and "## Orderings" in md
    assert all(f"| {head} |" in md for head in HEADS)
    assert (repo / "data/report/report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bytes/keyframe" in out

    again = dvc(repo, "repro")
    assert ran(again) == set() and "Data and pipelines are up to date" in again

    shown = dvc(repo, "metrics", "show")
    assert "data/eval/linear/metrics.json" in shown and "mAP" in shown

    # The stages read a store through its digest (data/features.digest), written by extract
    # once the store is complete.  A rerun of extract that leaves every byte of the store
    # (batch_size is not in the spec: every video is reused) reruns nothing after it ...
    params = yaml.safe_load((repo / "stages.yaml").read_text())
    committed = (repo / "stages.yaml").read_text()
    digest = (repo / "data/features.digest").read_bytes()
    params["extract"]["batch_size"] = 4
    (repo / "stages.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro")) == {"extract"}
    assert (repo / "data/features.digest").read_bytes() == digest
    # ... a store that changed changes every stage that reads it (and only those) ...
    params["extract"]["clip_stride"] = 1
    (repo / "stages.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro", "--single-item", "extract")) == {"extract"}
    status = json.loads(dvc(repo, "status", "--json"))
    assert set(status) == {"bank_lfb", "bank_acfb", *per_head}, status
    for name, entries in status.items():
        changed = {k: v for e in entries if isinstance(e, dict)
                   for k, v in e.get("changed deps", {}).items()}
        assert changed == {"data/features.digest": "modified"}, (name, entries)
    # ... and back to the committed parameters, the rebuilt store has the same bytes again
    (repo / "stages.yaml").write_text(committed)
    assert ran(dvc(repo, "repro")) == {"extract"}
    assert (repo / "data/features.digest").read_bytes() == digest
    assert "up to date" in dvc(repo, "status")

    # an acar parameter reruns acar, and the acfb bank (made by the trained acar) and all
    # after it; nothing else (not the other heads, not the lfb bank)
    params = yaml.safe_load((repo / "stages.yaml").read_text())
    # (report reruns when a metrics.json it reads changed: almost always, so it is optional)
    params["heads"]["acar"]["seed"] = 1
    (repo / "stages.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro")) - {"report"} == {"train@acar", "eval@acar", "bank_acfb",
                                                    "train@acfb", "eval@acfb"}

    # a parameter common to all heads reruns every train/eval (and the acfb bank, which is
    # made by the trained acar), not synth, detect, extract or the lfb bank
    params["train"]["epochs"] += 1
    (repo / "stages.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro")) - {"report"} == per_head | {"bank_acfb"}

    # the report's own section reruns the report only
    params["report"]["title"] = "retitled"
    (repo / "stages.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro")) == {"report"}
    assert (repo / "data/report/report.md").read_text().startswith("# retitled\n")

    assert ran(dvc(repo, "repro", "--force", "--single-item", "bank_lfb")) == {"bank_lfb"}


def test_share_features_through_the_dvc_remote(repo, tmp_path_factory):
    """Clone A pushes; a fresh clone B pulls, has nothing to rerun, and trains on the
    pulled features directly."""
    if not (repo / "dvc.lock").exists():
        dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline results")
    tracked = subprocess.run(["git", "ls-files", "data/report"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout.split()
    assert sorted(tracked) == [f"data/report/{f}" for f in (  # cache: false, so git's
        "per_class_ap.png", "report.md", "report.png", "train_loss.png", "val_mAP.png")]
    dvc(repo, "push")
    remote = repo.parent / "acar-dvc-remote"          # ../../acar-dvc-remote from .dvc/
    assert remote.is_dir() and any(remote.rglob("*"))

    clone = repo.parent / "clone_b"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "data" / "features.zarr").exists()
    dvc(clone, "pull")
    assert (clone / "data" / "features.zarr" / "zarr.json").exists()
    status = dvc(clone, "repro")
    assert ran(status) == set() and "up to date" in status

    params = clone / "acar_params.yaml"
    params.write_text("train: {epochs: 1, batch_size: 4}\n"
                      "heads: {acar: {hparams: {reduce_dim: 16, hidden_dim: 8, depth: 1}}}\n")
    res = subprocess.run(
        [sys.executable, "-m", "cli.main", "--params", str(params), "train", "--head", "acar",
         "--features", "data/features.zarr", "--detections", "data/detections.parquet",
         "--annotations", "data/synth/train.csv", "--labelmap", "data/synth/labelmap.pbtxt",
         "--out", "acar.pt"], cwd=clone, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (clone / "acar.pt").stat().st_size > 0


def test_the_grown_pipelines_memory_chain_runs_and_then_has_nothing_to_do(tmp_path):
    """grown/dvc.yaml (issue 17's third pipeline file) on a tiny grown world, up to the
    memory head (its own stages; the other kinds are those of dvc.yaml): synth, detect, the
    store with time bins, t_only, its memory bank, stage two from t_only.pt with the
    memory's reach passed by --hparam, and its eval; a second repro runs nothing, and the
    default world's paths are untouched.  (The whole file: `dvc repro grown/dvc.yaml`,
    measured in the README.)"""
    repo = tmp_path / "repo"
    (repo / "grown").mkdir(parents=True)
    shutil.copy(ROOT / "grown" / "dvc.yaml", repo / "grown" / "dvc.yaml")
    shutil.copy(ROOT / "tests" / "grown_tiny.yaml", repo / "grown" / "stages.yaml")
    for package in ("cli", "pipeline"):
        shutil.copytree(ROOT / package, repo / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    doc = yaml.safe_load((repo / "grown" / "dvc.yaml").read_text())
    memory = {k: v for item in doc["vars"] for k, v in item.items()}["memory"]
    out = dvc(repo, "repro", "grown/dvc.yaml:eval_t_only_mem")
    assert {s.split(":")[-1] for s in ran(out)} == {
        "synth", "detect", "extract", "train@t_only", "bank_memory", "train_t_only_mem",
        "eval_t_only_mem"}
    from pipeline.artifacts.checkpoint import load_checkpoint
    from pipeline.artifacts.metrics import read_metrics

    ckpt = load_checkpoint(repo / "data" / "grown" / "models" / "t_only_mem.pt")
    assert {k: ckpt["hparams"][k] for k in memory} == memory
    assert ckpt["hparams"]["width"] == 16                    # the params file's, kept
    assert 0 <= read_metrics(repo / "data" / "grown" / "eval" / "t_only_mem"
                             / "metrics.json")["mAP"] <= 1
    assert not (repo / "data" / "features.zarr").exists()
    assert ran(dvc(repo, "repro", "grown/dvc.yaml:eval_t_only_mem")) == set()
