"""DVC push/pull time of a feature store to the local directory remote.

    uv run python bench/dvc_share.py [--keyframes 5000] [--per-video 100]

Builds a store with one chunk per keyframe (the layout `acar extract` writes), `dvc add`s
it in a scratch repo, then times `dvc push` and a `dvc pull` into a fresh clone.  It
repeats this with Zarr v3's sharding codec (one shard file per video) to show whether
per-file overhead dominates.  Writes bench/results/dvc_share.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, keyframes: int, per_video: int, shape: tuple, sharded: bool) -> int:
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    rng = np.random.default_rng(0)
    for v in range(keyframes // per_video):
        g = root.create_group(f"v{v:04d}")
        data = rng.standard_normal((per_video, *shape)).astype(np.float16)
        kw = {"shards": (per_video, *shape)} if sharded else {}
        arr = g.create_array("s256", shape=data.shape, chunks=(1, *shape), dtype="float16", **kw)
        arr[:] = data
    return sum(1 for p in path.rglob("*") if p.is_file())


def run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def measure(tmp: Path, keyframes: int, per_video: int, shape: tuple, sharded: bool) -> dict:
    dvc = [sys.executable, "-m", "dvc"]
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    tag = "sharded" if sharded else "chunk-per-file"
    a, remote = tmp / f"{tag}_a", tmp / f"{tag}_remote"
    a.mkdir()
    subprocess.run(git + ["init", "-q"], cwd=a, check=True)
    subprocess.run(dvc + ["init", "-q"], cwd=a, check=True)
    subprocess.run(dvc + ["remote", "add", "-d", "r", str(remote)], cwd=a, check=True)
    files = build(a / "features.zarr", keyframes, per_video, shape, sharded)
    size = sum(p.stat().st_size for p in (a / "features.zarr").rglob("*") if p.is_file())
    t_add = run(dvc + ["add", "features.zarr"], a)
    subprocess.run(git + ["add", "-A"], cwd=a, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=a, check=True)
    t_push = run(dvc + ["push"], a)
    b = tmp / f"{tag}_b"
    subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
    t_pull = run(dvc + ["pull"], b)
    return {"files": files, "mib": round(size / 2**20, 1), "add_s": round(t_add, 2),
            "push_s": round(t_push, 2), "pull_s": round(t_pull, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", type=int, default=5000)
    ap.add_argument("--per-video", type=int, default=100)
    ap.add_argument("--shape", default="512,4,4", help="C,H,W of one keyframe's map")
    args = ap.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    results = {"keyframes": args.keyframes, "per_video": args.per_video, "shape": shape}
    with tempfile.TemporaryDirectory() as tmp:
        for sharded in (False, True):
            key = "sharded" if sharded else "chunk_per_file"
            results[key] = measure(Path(tmp), args.keyframes, args.per_video, shape, sharded)
            print(key, results[key], flush=True)
    out = ROOT / "bench" / "results" / "dvc_share.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    shutil.rmtree(Path(os.environ.get("TMPDIR", "/tmp")) / "nonexistent", ignore_errors=True)


if __name__ == "__main__":
    main()
