"""Threads per process (issue 21 item 5): one acar training epoch alone, and two side by
side, with torch's default threads and with acar's default (:mod:`pipeline.threads`).

Each worker is a fresh process that applies the thread policy exactly as ``acar`` does
(``pipeline.threads.setup``), builds a small feature store in memory (bench/train.py's
``make_store``) and times ``--epochs`` epochs of the ``acar`` head.  Cases:

* ``alone``: one worker, no hint (acar's default is then torch's: every usable CPU);
* ``pair_torch_default``: two workers at once, no hint (each takes every CPU);
* ``pair_acar_jobs``: two workers at once with ``ACAR_JOBS=2``, what a launcher that runs
  two acar processes on one machine sets (each takes CPUs / 2).

    .venv/bin/python bench/threads.py [--keyframes 256] [--epochs 2]

Writes bench/results/threads.json (the machine is shared: the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "threads.json"
HINTS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SLURM_CPUS_PER_TASK", "ACAR_JOBS")


def worker(args: argparse.Namespace) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from pipeline.threads import setup

    threads, why = setup(None)  # as the acar group does, before torch is imported
    import tempfile

    import torch
    from train import epoch_rate, make_store  # bench/train.py

    from pipeline import train

    cfg = train.TrainConfig(batch_size=16)
    with tempfile.TemporaryDirectory() as tmp:
        store, samples = make_store(f"{tmp}/f.zarr", args.keyframes, args.channels, args.size)
        epoch_rate(store, samples[:32], "acar", True, 0, cfg)  # warm-up
        times = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            epoch_rate(store, samples, "acar", True, 0, cfg)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"threads": threads, "why": why, "torch_threads": torch.get_num_threads(),
                      "epoch_s": [round(t, 2) for t in times]}))


def run_case(args: argparse.Namespace, n: int, env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in HINTS} | env_extra
    cmd = [sys.executable, __file__, "--worker", "--keyframes", str(args.keyframes),
           "--channels", str(args.channels), "--size", str(args.size),
           "--epochs", str(args.epochs)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"worker failed: {outs}")
    workers = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    epochs = [t for w in workers for t in w["epoch_s"]]
    return {"processes": n, "env": env_extra, "workers": workers,
            "mean_epoch_s": round(sum(epochs) / len(epochs), 2),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", type=int, default=256)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    result = {"keyframes": args.keyframes, "channels": args.channels, "map": args.size,
              "head": "acar", "cpus": os.cpu_count(),
              "affinity": len(os.sched_getaffinity(0)),
              "loadavg_before": [round(x, 2) for x in os.getloadavg()], "cases": {}}
    for name, n, env in [("alone", 1, {}), ("pair_torch_default", 2, {}),
                         ("pair_acar_jobs", 2, {"ACAR_JOBS": "2"}), ("alone_again", 1, {})]:
        result["cases"][name] = run_case(args, n, env)
        print(name, result["cases"][name], flush=True)
    c = result["cases"]
    result["pair_slowdown_torch_default"] = round(
        c["pair_torch_default"]["mean_epoch_s"] / c["alone"]["mean_epoch_s"], 2)
    result["pair_slowdown_acar_jobs"] = round(
        c["pair_acar_jobs"]["mean_epoch_s"] / c["alone"]["mean_epoch_s"], 2)
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
