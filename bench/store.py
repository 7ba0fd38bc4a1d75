"""Store size: int8 against float16 features, in accuracy and in bytes.

``world``: the toy world (``bench/world.py``'s ``run_seed``: synth -> detect -> extract ->
every head -> eval) on the same seeds twice, once with ``extract.dtype: float16`` and once
with ``int8``, everything else from ``--params``.  Writes bench/results/store_world.json: the
per-family AP x 100 of each head and dtype, and the int8 - float16 differences (target:
|diff| <= 0.5 point per head and family).

    nice -n 5 uv run python bench/store.py world --seeds 0          # ~2 x 5.5 min per seed

``project``: the projected AVA train + val store (270 k keyframes) per backbone, view count
(1; 3 scales + flip = 6) and dtype, from the bytes per stored value that
``bench/extract.py`` measured (bench/results/extract_<backbone>.json; float16 and int8 of
the same maps).  Writes bench/results/store.json and prints the README's table.

    uv run python bench/store.py project
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
AVA_KEYFRAMES = 270_000          # AVA v2.2 train (~211 k) + val (~57 k) keyframes
VIEWS = (1, 6)                   # one view; 3 scales x (plain, flip)
# The map of one AVA keyframe (16:9 frames, short side 256, the stage's square padding
# to a multiple of 32: a 480 x 480 canvas) per backbone; SlowFast R101 with dilated res5 as
# its reference implementation pads (the 2304 x 16 x 22).
AVA_MAPS = {
    "hoghof": "hoghof",
    "r2plus1d_18": "r2plus1d_18",
    "i3d": "i3d",
    "slowfast_r50": "slowfast_r50",
    "slowfast_r101": "slowfast_r101",
}
AVA_SHAPE = {"hoghof": (None, 24, 24), "r2plus1d_18": (512, 30, 30), "i3d": (1024, 15, 15),
             "slowfast_r50": (2304, 16, 22), "slowfast_r101": (2304, 16, 22)}
# Backbones without their own measurement take the bytes per value of a measured one.
MEASURED_AS = {"slowfast_r50": "i3d", "slowfast_r101": "i3d"}


def world(seeds: list[int], params: str, work: Path, heads: list[str]) -> dict:
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    toy = importlib.import_module("world")            # bench/world.py

    base = yaml.safe_load(Path(params).read_text())
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float16", "int8"):
            p = Path(tmp) / f"params_{dtype}.yaml"
            p.write_text(yaml.safe_dump({**base, "extract": {**base["extract"], "dtype": dtype}}))
            runs[dtype] = []
            for seed in seeds:
                t0 = time.perf_counter()
                run = toy.run_seed(seed, str(p), work / dtype / f"seed{seed}", heads)
                run["total_seconds"] = round(time.perf_counter() - t0, 1)
                runs[dtype].append(run)
    diff: dict[str, dict[str, list[float]]] = {}
    worst = 0.0
    for head in heads:
        diff[head] = {}
        for fam in runs["float16"][0]["metrics"][head]:
            d = []
            for a, b in zip(runs["float16"], runs["int8"], strict=True):
                va, vb = a["metrics"][head][fam], b["metrics"][head][fam]
                if va is not None and vb is not None:
                    d.append(round(100 * (vb - va), 2))
            diff[head][fam] = d
            worst = max([worst, *map(abs, d)])
    return {"params": params, "seeds": seeds, "runs": runs,
            "int8_minus_float16_ap_points": diff, "max_abs_diff_points": worst,
            "target_points": 0.5, "met": worst <= 0.5,
            "table_float16": toy.table(runs["float16"], heads),
            "table_int8": toy.table(runs["int8"], heads),
            "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}


def project() -> dict:
    rows, measured = [], {}
    for path in sorted(RESULTS.glob("extract_*.json")):
        r = json.loads(path.read_text())
        if "dtypes" in r:
            measured[r["backbone"]] = r
    for name, shape in AVA_SHAPE.items():
        src = measured.get(MEASURED_AS.get(name, name))
        if src is None:
            continue
        c = shape[0] if shape[0] is not None else src["map_shape"][0]
        values = c * shape[1] * shape[2]
        for dtype, m in src["dtypes"].items():
            per_value = m["group_bytes_per_keyframe"] / math.prod(src["map_shape"])
            for views in VIEWS:
                rows.append({"backbone": name, "map": [c, shape[1], shape[2]],
                             "measured_on": src["backbone"], "dtype": dtype, "views": views,
                             "bytes_per_value": per_value,
                             "bytes_per_keyframe_view": per_value * values,
                             "ava_gb": per_value * values * views * AVA_KEYFRAMES / 1e9})
    return {"keyframes": AVA_KEYFRAMES, "rows": rows}


def table(result: dict) -> str:
    lines = ["| backbone | map (C x H x W) | dtype | bytes/keyframe/view | 1 view | 6 views |",
             "|---|---|---|---|---|---|"]
    by = {}
    for r in result["rows"]:
        by.setdefault((r["backbone"], r["dtype"]), {})[r["views"]] = r
    for (name, dtype), v in by.items():
        r1 = v[1]
        lines.append(f"| {name} | {' x '.join(map(str, r1['map']))} | {dtype} | "
                     f"{r1['bytes_per_keyframe_view'] / 1e3:.0f} kB | {r1['ava_gb']:.0f} GB | "
                     f"{v[6]['ava_gb']:.0f} GB |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("world")
    w.add_argument("--seeds", type=int, nargs="+", default=[0])
    w.add_argument("--params", default=str(ROOT / "stages.yaml"))
    w.add_argument("--work", type=Path, default=Path("/tmp/acar_store_world"))
    w.add_argument("--heads", nargs="+",
                   default=["linear", "actor_actor", "acrn", "acar", "acfb", "lfb"])
    sub.add_parser("project")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.cmd == "world":
        result = world(args.seeds, args.params, args.work, args.heads)
        (RESULTS / "store_world.json").write_text(json.dumps(result, indent=1) + "\n")
        print("float16\n" + result["table_float16"] + "\nint8\n" + result["table_int8"])
        print(f"max |int8 - float16| = {result['max_abs_diff_points']} AP points")
    else:
        result = project()
        (RESULTS / "store.json").write_text(json.dumps(result, indent=1) + "\n")
        print(table(result))


if __name__ == "__main__":
    main()
