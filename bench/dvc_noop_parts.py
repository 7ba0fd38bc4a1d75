"""Where a no-op ``dvc status`` spends its CPU: importing dvc, opening the repo, parsing the
pipeline files and locks (the index), and each stage's status (the three store producers,
whose outputs DVC walks, apart).  Run it with the scratch clone's own Python, in the clone::

    cd /tmp/noop && .venv/bin/python /work/wt/noop/bench/dvc_noop_parts.py --label after

It merges ``{label: {...}}`` into ``bench/results/dvc_noop_parts.json`` beside this file's
repository (``--out``), with the load average next to the numbers.
"""

from __future__ import annotations

import time

T0 = time.process_time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from dvc.repo import Repo  # noqa: E402

STORE_PRODUCERS = ("extract", "bank_lfb", "bank_acfb")
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "dvc_noop_parts.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    t1 = time.process_time()
    repo = Repo(".")
    with repo.lock:
        t2 = time.process_time()
        stages = list(repo.index.stages)
        t3 = time.process_time()
        per: dict[str, float] = {}
        for stage in stages:
            a = time.process_time()
            stage.status()
            per[stage.addressing] = time.process_time() - a
        t4 = time.process_time()
    stores = {k: round(v, 2) for k, v in per.items() if k.split(":")[-1] in STORE_PRODUCERS}
    entry = {"repo": os.getcwd(), "import_dvc_s": round(t1 - T0, 2),
             "open_repo_s": round(t2 - t1, 2), "index_parse_s": round(t3 - t2, 2),
             "stage_status_s": round(t4 - t3, 2), "store_producers_s": stores,
             "other_stages_s": round(sum(per.values()) - sum(stores.values()), 2),
             "stages": len(per), "total_cpu_s": round(t4 - T0, 2),
             "loadavg_1m_before": load, "loadavg_1m_after": os.getloadavg()[0]}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
