"""DDP training with torchrun (2 CPU processes, gloo) equals single-process training."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.artifacts.detections import write_detections
from tests.conftest import ROOT, boxes_gt, make_feature_store

TOLERANCE = 1e-5   # max |w_ddp - w_single| after one epoch (float32 reduction order)

PARAMS = """
train: {epochs: 1, batch_size: 3, lr: 0.05, warmup_epochs: 0.5, jitter: 0.075, seed: 3}
heads:
  acar: {hparams: {reduce_dim: 8, hidden_dim: 8, depth: 1, hr2o_dropout: 0.0}}
"""


def train_cmd(out, fs, det, gt, lm, params):
    return ["-m", "cli.main", "--params", str(params), "train", "--head", "acar",
            "--features", fs, "--detections", str(det), "--annotations", str(gt),
            "--labelmap", str(lm), "--out", str(out)]


@pytest.mark.parametrize("nproc", [2])
def test_ddp_matches_single_process(nproc, tmp_path, feature_store, detections_file,
                                    labelmap_file):
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)   # 7 keyframes: last batch of 1
    params = tmp_path / "p.yaml"
    params.write_text(PARAMS)
    args = (feature_store, detections_file, gt, labelmap_file, params)
    single = subprocess.run([sys.executable, *train_cmd(tmp_path / "single.pt", *args)],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", *train_cmd(tmp_path / "ddp.pt", *args)],
        capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_checkpoint(tmp_path / "single.pt")
    b = load_checkpoint(tmp_path / "ddp.pt")
    diffs = {k: (a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max().item()
             for k in a["state_dict"]}
    assert max(diffs.values()) < TOLERANCE, diffs
    assert a["train"]["log"][0]["loss"] == pytest.approx(b["train"]["log"][0]["loss"], rel=1e-5)
    # the weights did move, so the comparison is not trivially true
    torch.manual_seed(3)
    from pipeline.models import build_head
    init = build_head("acar", 8, 4, reduce_dim=8, hidden_dim=8, depth=1, hr2o_dropout=0.0)
    moved = max((a["state_dict"][k] - v).abs().max().item()
                for k, v in init.state_dict().items() if v.is_floating_point())
    assert moved > 100 * TOLERANCE


# ---- DataLoader workers die with their parent (issue 19, item 11b) -----------------------

# Runs `acar` with torch's own parent poll in the workers (every 5 s, after the batches they
# hold) pushed out of the way, so that only acar's mechanism can end them.
WORKERS_SCRIPT = """
import sys
import torch.utils.data._utils.worker as worker
worker.MP_STATUS_CHECK_INTERVAL = 300.0
from cli.main import main
sys.argv = ["acar", *sys.argv[1:]]
main()
"""


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc/*/stat."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dataloader_workers_die_with_a_killed_parent(tmp_path, labelmap_file):
    """kill -9 of a training run with 2 loader workers: the workers are gone at once (a
    generous 10 s bound), not after torch's next poll of the parent."""
    videos = {"vid_a": 150, "vid_b": 150}
    make_feature_store(str(tmp_path / "f.zarr"), videos)
    gt = boxes_gt(videos)
    write_annotations(gt, tmp_path / "gt.csv")
    write_detections(gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
                     .assign(score=0.95), tmp_path / "d.parquet", {"source": "test"})
    (tmp_path / "p.yaml").write_text("train: {epochs: 1000, batch_size: 1, num_workers: 2, "
                                     "cache: disk}\n")
    cmd = [sys.executable, "-c", WORKERS_SCRIPT, "--params", str(tmp_path / "p.yaml"),
           "train", "--features", str(tmp_path / "f.zarr"), "--detections",
           str(tmp_path / "d.parquet"), "--annotations", str(tmp_path / "gt.csv"),
           "--labelmap", str(labelmap_file), "--out", str(tmp_path / "m.pt")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            workers = _children(proc.pid)
        assert len(workers) == 2, proc.stderr.read().decode() if proc.poll() is not None \
            else f"no 2 workers after 120 s: {workers}"
        time.sleep(0.5)                       # mid-epoch: they hold batches
        workers = _children(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} outlived their killed parent by 10 s"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in _children(proc.pid) + [w for w in workers if _alive(w)]:
            os.kill(w, signal.SIGKILL)
