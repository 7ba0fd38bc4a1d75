"""Cost of a no-op ``dvc status`` / ``dvc repro`` on a populated checkout of the default DAG.

Run it on a scratch clone whose ``data/`` is checked out (``dvc status`` up to date)::

    git clone /work/main /tmp/noop && cd /tmp/noop && uv sync --locked
    cp -a /work/main/.dvc/cache/. .dvc/cache/ && .venv/bin/dvc checkout
    python bench/dvc_noop.py --repo /tmp/noop --label before

Each label's entry (wall and CPU seconds of each ``dvc status``, the best, the files and
directories under each output folder, and how many stages name each directory dep or out
in dvc.lock: DVC walks and hashes a directory once per stage that names it) is merged into
``bench/results/dvc_noop.json``, so two layouts measured one after the other sit side by
side.  ``--flat-chunks`` first rewrites the repo's Zarr stores to flat chunk keys
(``c.0.0`` instead of ``c/0/0``) and re-commits them with ``dvc commit -f``: what the
stores' ``chunk_key_encoding`` change gives, on the same data.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dvc_noop.json"


def _timed(cmd: list[str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    return {"wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "user_s": round(usage.ru_utime, 2), "rc": os.waitstatus_to_exitcode(status),
            "up_to_date": "up to date" in out, "tail": out.strip().splitlines()[-3:]}


def _counts(repo: Path) -> dict:
    out = {}
    for d in sorted((repo / "data").iterdir()):
        if d.is_dir():
            files = dirs = 0
            for _, ds, fs in os.walk(d):
                dirs += len(ds)
                files += len(fs)
            out[d.name] = {"files": files, "dirs": dirs + 1}
    return out


def _stage_refs(repo: Path) -> dict[str, int]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    refs: collections.Counter = collections.Counter()
    for stage in lock["stages"].values():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            if "nfiles" in entry:
                refs[entry["path"]] += 1
    return dict(refs.most_common())


def flatten_chunk_keys(store: Path) -> int:
    """Rewrite every array of the Zarr v3 store ``store`` from ``c/i/j`` chunk keys to
    ``c.i.j`` (files moved, ``zarr.json`` edited); returns the arrays rewritten."""
    n = 0
    for meta in store.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        enc = doc.get("chunk_key_encoding", {})
        if doc.get("node_type") != "array" or enc.get("configuration", {}).get(
                "separator", "/") != "/":
            continue
        root = meta.parent
        for f in sorted((root / "c").rglob("*")) if (root / "c").is_dir() else []:
            if f.is_file():
                f.rename(root / ".".join(["c", *f.relative_to(root / "c").parts]))
        for d in sorted((root / "c").rglob("*"), reverse=True) if (root / "c").is_dir() else []:
            d.rmdir()
        if (root / "c").is_dir():
            (root / "c").rmdir()
        enc.setdefault("configuration", {})["separator"] = "."
        doc["chunk_key_encoding"] = enc
        meta.write_text(json.dumps(doc, indent=2))
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--flat-chunks", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    dvc = str(args.repo / ".venv" / "bin" / "dvc")
    entry: dict = {"repo": str(args.repo), "loadavg_1m_at_start": os.getloadavg()[0]}
    if args.flat_chunks:
        stores = [p for p in (args.repo / "data").rglob("*.zarr") if p.is_dir()]
        entry["flattened_arrays"] = {str(s.relative_to(args.repo)): flatten_chunk_keys(s)
                                     for s in stores}
        entry["commit"] = _timed([dvc, "commit", "-f"], args.repo)
    entry["counts"] = _counts(args.repo)
    entry["stage_refs"] = _stage_refs(args.repo)
    entry["status_runs"] = [_timed([dvc, "status"], args.repo) for _ in range(args.repeat)]
    entry["best_wall_s"] = min(r["wall_s"] for r in entry["status_runs"])
    entry["best_cpu_s"] = min(r["cpu_s"] for r in entry["status_runs"])
    entry["loadavg_1m_at_end"] = os.getloadavg()[0]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
