"""Cost of a no-op ``dvc status`` / ``dvc repro`` on a populated checkout of the default DAG.

Run it on a scratch clone whose ``data/`` is checked out (``dvc status`` up to date)::

    git clone /work/main /tmp/noop && cd /tmp/noop && uv sync --locked
    cp -a /work/main/.dvc/cache/. .dvc/cache/ && .venv/bin/dvc checkout
    python bench/dvc_noop.py --repo /tmp/noop --label before

Each label's entry (wall and CPU seconds of each ``dvc status`` and, with ``--repro``, of
each no-op ``dvc repro``, the best, the load average before and after each run, the files and
directories under each output folder, and how many stages name each directory dep or out
in dvc.lock: DVC walks and hashes a directory once per stage that names it) is merged into
``bench/results/dvc_noop.json``.  Several ``--repo``/``--label`` pairs are measured side by
side: the runs alternate between the repos, round after round (``--repeat`` rounds), so
two layouts meet the same load.  ``--flat-chunks`` first rewrites the repo's Zarr stores to
flat chunk keys (``c.0.0`` instead of ``c/0/0``) and re-commits them with ``dvc commit -f``:
what the stores' ``chunk_key_encoding`` change gives, on the same data.

The store digests (``pipeline/artifacts/digest.py``: stages depend on ``<store>.digest``,
not on the store folder) on the same data: a second clone of the branch that has them, its
``data/`` copied from the first, ``--write-digests`` writes each store's digest with the
repo's own code and re-records the lock with ``dvc commit -f`` (no stage reruns; the lock
is that of a measurement, not one to commit)::

    python bench/dvc_noop.py --repo /tmp/noop --label before --repo /tmp/noop_after \
        --label after --write-digests after --repro --repeat 3 --label-set digest
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


def _files_walked(repo: Path) -> int:
    """The files of every directory entry of dvc.lock, summed over the stages naming it."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return sum(int(entry["nfiles"]) for stage in lock["stages"].values()
               for entry in stage.get("deps", []) + stage.get("outs", []) if "nfiles" in entry)


def write_digests(repo: Path) -> dict:
    """Write the digest of each store of ``repo`` with the repo's own code (its venv), then
    ``dvc commit -f``: the lock records the digests without rerunning a stage."""
    stores = sorted(str(p.relative_to(repo)) for p in (repo / "data").rglob("*.zarr")
                    if p.is_dir())
    code = ("import sys; from pipeline.artifacts.digest import write_digest\n"
            "for s in sys.argv[1:]: print(write_digest(s))")
    out = {"stores": stores,
           "write": _timed([str(repo / ".venv" / "bin" / "python"), "-c", code, *stores], repo)}
    out["commit"] = _timed([str(repo / ".venv" / "bin" / "dvc"), "commit", "-f"], repo)
    return out


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
    ap.add_argument("--repo", type=Path, action="append", required=True)
    ap.add_argument("--label", action="append", required=True,
                    help="one per --repo, in the same order")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--repro", action="store_true", help="also time a no-op `dvc repro`")
    ap.add_argument("--flat-chunks", action="store_true")
    ap.add_argument("--write-digests", action="append", default=[], metavar="LABEL",
                    help="first write the stores' digests in this label's repo, and commit")
    ap.add_argument("--label-set", default=None,
                    help="store the entries under this key (a side-by-side run)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if len(args.repo) != len(args.label):
        ap.error("give one --label per --repo")
    entries: dict[str, dict] = {}
    for repo, label in zip(args.repo, args.label, strict=True):
        entry: dict = {"repo": str(repo), "loadavg_1m_at_start": os.getloadavg()[0]}
        dvc = str(repo / ".venv" / "bin" / "dvc")
        if args.flat_chunks:
            stores = [p for p in (repo / "data").rglob("*.zarr") if p.is_dir()]
            entry["flattened_arrays"] = {str(s.relative_to(repo)): flatten_chunk_keys(s)
                                         for s in stores}
            entry["commit"] = _timed([dvc, "commit", "-f"], repo)
        if label in args.write_digests:
            entry["write_digests"] = write_digests(repo)
        entry["counts"] = _counts(repo)
        entry["stage_refs"] = _stage_refs(repo)
        entry["directory_walks"] = sum(entry["stage_refs"].values())
        entry["files_walked"] = _files_walked(repo)
        entry["status_runs"], entry["repro_runs"] = [], []
        entries[label] = entry
    commands = [("status_runs", ["status"])] + ([("repro_runs", ["repro"])] if args.repro
                                                else [])
    for _ in range(args.repeat):            # alternate: each round, every repo in turn
        for label, repo in zip(args.label, args.repo, strict=True):
            for key, cmd in commands:
                load = os.getloadavg()[0]
                run = _timed([str(repo / ".venv" / "bin" / "dvc"), *cmd], repo)
                entries[label][key].append({**run, "loadavg_1m_before": load,
                                            "loadavg_1m_after": os.getloadavg()[0]})
    for entry in entries.values():
        for key in ("status_runs", "repro_runs"):
            if entry[key]:
                name = key.removesuffix("_runs")
                entry[f"best_{name}_wall_s"] = min(r["wall_s"] for r in entry[key])
                entry[f"best_{name}_cpu_s"] = min(r["cpu_s"] for r in entry[key])
                entry[f"all_{name}_up_to_date"] = all(r["up_to_date"] for r in entry[key])
        entry["best_wall_s"] = entry["best_status_wall_s"]
        entry["best_cpu_s"] = entry["best_status_cpu_s"]
        entry["loadavg_1m_at_end"] = os.getloadavg()[0]
        if not entry["repro_runs"]:
            del entry["repro_runs"]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.label_set:
        results[args.label_set] = {"nproc": os.cpu_count(), **entries}
    else:
        results.update(entries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for label, entry in entries.items():
        print(label, {k: v for k, v in entry.items() if k.startswith(("best", "all", "dir",
                                                                       "files", "stage"))})


if __name__ == "__main__":
    main()
