"""The toy world's APs on an int8 and a float32 store against float16, over seeds.

Issue 21, target 2: "the toy world's per-family APs must change by at most 0.5 point per
head against float16".  Training is chaotic (one torch thread against two moved acar's mAP
by 0.9), so per seed of the default world (``--params``) this measures, for every head:

- ``int8`` retrained: the world's float16 store quantised exactly as ``extract.dtype:
  int8`` writes it (:func:`store.quantised_copy`), then banks, train, eval on it;
- ``float32`` retrained (the noise floor): the world extracted again with ``extract.dtype:
  float32`` (the maps before their float16 rounding: a smaller input change of the same
  kind), then banks, train, eval on it;
- no retraining: the float16-trained checkpoints evaluated on the int8 and the float32
  store (banks rebuilt from that store; acfb's with the float16 acar).

The float16 side: ``--baseline`` (bench/results/world_alerted.json, the same world and
code, 1 thread) for the retrained deltas, and the float16 checkpoints of a world directory
for the no-retrain ones (``--seed-data S=DIR``: a ``dvc repro`` data/ with synth/,
detections.parquet, features.zarr, models/<head>.pt; other seeds are made here with
bench/world.py's stage calls and their float16 heads trained only with
``--float16-retrain``).  ``--check-head`` retrains that float16 head of the first seed
first and records whether it reproduces the baseline exactly.

Writes bench/results/store_ap.json after every head (a cut run keeps what it finished;
a rerun with the same ``--work`` skips heads whose metrics are there) and prints the
table: per head, family and mAP, the mean ± std over seeds of int8 - float16, float32 -
float16 (the floor), and the no-retrain deltas, in AP points.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/store_ap.py --seeds 0 1 2 \\
        --seed-data 0=../main/data --check-head linear
    .venv/bin/python bench/store_ap.py --table      # the table of the JSON only
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))
store = importlib.import_module("store")          # bench/store.py: quantised_copy
world = importlib.import_module("world")          # bench/world.py: HEADS, the stage calls

HEADS = world.DEFAULT_HEADS                       # linear actor_actor acrn acar acfb lfb
FAMILIES = ["pose", "context", "relation", "longterm", "mAP"]
BANK_OF = {"acfb": "acfb", "lfb": "lfb"}
VARIANTS = ["int8", "float32"]


def read_eval(path: Path) -> dict:
    from pipeline.artifacts.metrics import read_eval

    return read_eval(path)


def _metrics(m: dict) -> dict:
    return {"mAP": m["mAP"], **m["per_superclass"],
            "per_class": {c["name"]: c["ap"] for c in m["per_class"].values()}}


def float16_copy(src_url: str, dst_url: str) -> None:
    """A float32 store written again as ``extract.dtype: float16`` writes it: the same
    maps rounded to float16 (the stage's ``fmap.half()``), groups, attrs (``extra`` without
    ``dtype``) and views, through the stage's writer; one extraction gives both stores."""
    from pipeline.artifacts.features import FeatureStore

    src, dst = FeatureStore(src_url), FeatureStore(dst_url, mode="a")
    for video in src.videos():
        attrs = {k: v for k, v in src.attrs(video).items() if k != "complete"}
        extra = {k: v for k, v in attrs.get("extra", {}).items() if k != "dtype"}
        attrs = {k: v for k, v in attrs.items() if k != "extra"} | (
            {"extra": extra} if extra else {})
        dst.begin_video(video, src.timestamps(video), attrs)
        for name in src.spec(video).views:
            maps = src.read(video, name).astype("float16")
            arr = dst.create_view(video, src.view(video, name), maps.shape, "float16")
            dst.write_rows(video, arr, 0, maps)
        dst.finish_video(video)


class Seed:
    """One seed's directories: ``work/float16`` (the world and its float16 store and
    checkpoints), ``work/<variant>`` (that store, its banks, heads and metrics)."""

    def __init__(self, seed: int, params: str, work: Path, data: Path | None):
        from pipeline import detect, synth
        from pipeline.config import load_config

        self.seed, self.params, self.work = seed, params, work
        base = work / "float16"
        if data is not None and not (base / "features.zarr").exists():   # a dvc repro data/
            base.mkdir(parents=True, exist_ok=True)
            for name in ("synth", "features.zarr"):
                shutil.copytree(data / name, base / name)
            shutil.copy(data / "detections.parquet", base / "detections.parquet")
            (base / "models").mkdir(exist_ok=True)
            for h in HEADS:
                if (data / "models" / f"{h}.pt").exists():
                    shutil.copy(data / "models" / f"{h}.pt", base / "models" / f"{h}.pt")
        self.times: dict[str, float] = {}
        self.world, self.dets = base / "synth", base / "detections.parquet"
        self.stores = {"float16": str(base / "features.zarr")}
        self.models = {"float16": base / "models"}
        self.float16_from_float32 = False
        if not (base / "features.zarr").exists():      # bench/world.py's calls up to extract
            if not (self.world / "val.csv").exists() or not self.dets.exists():
                self._timed("synth", synth.run, load_config(synth.SynthConfig, "synth",
                                                            params, {"seed": seed}), self.world)
                self._timed("detect", detect.run,
                            load_config(detect.DetectConfig, "detect", params),
                            self.world / "videos", self.dets,
                            [self.world / "train.csv", self.world / "val.csv"])
            # one extraction (float32), its float16 rounding written as the stage writes it
            # (on seed 0 equal in every value and attr to the stage's float16 store)
            self.make_store("float32")
            tmp = base / "features.zarr.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            self._timed("store_float16", float16_copy, self.stores["float32"], str(tmp))
            tmp.rename(base / "features.zarr")
            self.float16_from_float32 = True

    def _timed(self, name: str, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.times[name] = round(time.perf_counter() - t0, 1)
        return out

    def make_store(self, variant: str) -> str:
        """The int8 copy of the float16 store, or the float32 extraction (renamed into
        place when whole: a cut run redoes it)."""
        from pipeline import extract
        from pipeline.config import load_config

        d = self.work / variant
        url = d / "features.zarr"
        if not url.exists():
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "features.zarr.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            if variant == "int8":
                self._timed("store_int8", store.quantised_copy, self.stores["float16"],
                            str(tmp))
            else:
                self._timed(f"extract_{variant}", extract.run,
                            load_config(extract.ExtractConfig, "extract", self.params,
                                        {"dtype": variant}),
                            self.world / "videos", self.dets, str(tmp))
            tmp.rename(url)
        self.stores[variant] = str(url)
        self.models[variant] = d / "models"
        return str(url)

    def bank(self, kind: str, variant: str, acar: Path | None, out: Path) -> str:
        """The ``kind`` bank of ``variant``'s store at ``out`` (acfb: from ``acar``)."""
        from pipeline import bank
        from pipeline.config import load_config

        if True:                        # bank.run completes a cut bank, skips a whole one
            extra = {"model": acar, "annotations": [self.world / "train.csv"]} \
                if kind == "acfb" else {}
            self._timed(f"bank_{kind}_{variant}_{out.parent.name}", bank.run,
                        load_config(bank.BankConfig, f"bank.{kind}", self.params,
                                    {"kind": kind}),
                        self.stores[variant], self.dets, str(out), **extra)
        return str(out)

    def train_eval(self, head: str, variant: str) -> dict:
        """Train ``head`` on ``variant``'s store (its own banks) and evaluate it there."""
        from pipeline import train
        from pipeline.config import load_config

        d = self.work / variant
        models = self.models[variant]
        models.mkdir(parents=True, exist_ok=True)
        metrics = d / "retrained" / f"{head}_metrics.json"
        if metrics.exists():
            return _metrics(read_eval(metrics))
        metrics.parent.mkdir(parents=True, exist_ok=True)
        kind = BANK_OF.get(head)
        bank_url = self.bank(kind, variant, models / "acar.pt",
                             d / "retrained" / f"{kind}.zarr") if kind else None
        cfg = load_config(train.TrainConfig, ["train", f"heads.{head}"], self.params,
                          {"head": head})
        if cfg.init:
            cfg.init = str(models / Path(cfg.init).name)
        self._timed(f"train_{head}_{variant}", train.run, cfg, self.stores[variant], self.dets,
                    self.world / "train.csv", self.world / "labelmap.pbtxt",
                    models / f"{head}.pt", bank=bank_url)
        return self._eval(head, variant, models / f"{head}.pt", bank_url, metrics)

    def eval_float16_model(self, head: str, variant: str) -> dict | None:
        """The float16-trained ``head`` on ``variant``'s store; None without its checkpoint."""
        model = self.models["float16"] / f"{head}.pt"
        if not model.exists() or (head == "acfb"
                                  and not (self.models["float16"] / "acar.pt").exists()):
            return None
        d = self.work / variant / "float16_model"
        metrics = d / f"{head}_metrics.json"
        if metrics.exists():
            return _metrics(read_eval(metrics))
        d.mkdir(parents=True, exist_ok=True)
        kind = BANK_OF.get(head)
        if kind == "lfb":        # made of features and detections only: the retrained one's
            bank_url = self.bank(kind, variant, None, self.work / variant / "retrained"
                                 / "lfb.zarr")
        elif kind:
            bank_url = self.bank(kind, variant, self.models["float16"] / "acar.pt",
                                 d / f"{kind}.zarr")
        else:
            bank_url = None
        return self._eval(head, variant, model, bank_url, metrics)

    def _eval(self, head: str, variant: str, model: Path, bank_url: str | None,
              metrics: Path) -> dict:
        from pipeline import evaluate
        from pipeline.config import load_config

        m = self._timed(f"eval_{head}_{variant}_{metrics.parent.name}", evaluate.run,
                        load_config(evaluate.EvalConfig, "eval", self.params), model,
                        self.stores[variant], self.dets, self.world / "val.csv",
                        self.world / "labelmap.pbtxt", metrics,
                        excluded=self.world / "excluded.csv", bank=bank_url)
        return _metrics(m)


def _delta(a: dict | None, b: dict | None) -> dict | None:
    """a - b in AP points per family and mAP (None where either misses)."""
    if not a or not b:
        return None
    return {f: round(100 * (a[f] - b[f]), 2) for f in FAMILIES
            if a.get(f) is not None and b.get(f) is not None}


def deltas(result: dict) -> dict:
    """seed -> comparison -> head -> family -> points."""
    out = {}
    for s, r in result["seeds"].items():
        base, mine = r.get("float16_baseline", {}), r.get("float16_retrained", {})
        out[s] = {
            "int8_retrained": {h: _delta(r["int8"]["retrained"].get(h), base.get(h))
                               for h in HEADS},
            "float32_retrained": {h: _delta(r["float32"]["retrained"].get(h), base.get(h))
                                  for h in HEADS},
            "int8_float16_model": {h: _delta(r["int8"]["float16_model"].get(h),
                                             (mine or base).get(h)) for h in HEADS},
            "float32_float16_model": {h: _delta(r["float32"]["float16_model"].get(h),
                                                (mine or base).get(h)) for h in HEADS}}
    return out


COMPARISONS = {"int8_retrained": "int8 − float16, retrained",
               "float32_retrained": "float32 − float16, retrained (noise floor)",
               "int8_float16_model": "int8 − float16, float16 checkpoints (no retraining)",
               "float32_float16_model": "float32 − float16, float16 checkpoints"}


def _rows(deltas: dict, comp: str, head: str) -> list[dict]:
    """The per-family differences of ``head`` under comparison ``comp``, one per seed run."""
    return [x for s in deltas.values() if (x := s[comp].get(head))]


def table(result: dict) -> str:
    d = result["deltas"]
    lines = []
    for comp, title in COMPARISONS.items():
        lines += ["", f"{title}: mean ± std over seeds (n seeds), AP points", "",
                  "| head | " + " | ".join(FAMILIES) + " | mean abs | max abs |",
                  "|---" * (len(FAMILIES) + 3) + "|"]
        for h in HEADS:
            rows = _rows(d, comp, h)
            if not rows:
                continue
            cells = []
            for f in FAMILIES:
                vals = [r[f] for r in rows if f in r]
                if not vals:
                    cells.append("–")
                    continue
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):+.2f} ± {sd:.2f} ({len(vals)})")
            absolute = [abs(r[f]) for r in rows for f in r]
            lines.append(f"| {h} | " + " | ".join(cells)
                         + f" | {statistics.mean(absolute):.2f} | {max(absolute):.2f} |")
    return "\n".join(lines)


README_ROWS = {"int8_retrained": "int8, retrained",
               "float32_retrained": "float32, retrained (floor)",
               "int8_float16_model": "int8, float16 checkpoints"}


def readme_table(result: dict) -> str:
    """The README's table: per head, each comparison's mean ± std over its seeds of the
    difference to float16, per family and mAP, and the largest |difference| of any seed."""
    d = result["deltas"]
    lines = ["| head | store − float16 | seeds | " + " | ".join(FAMILIES) + " | max abs |",
             "|---" * (len(FAMILIES) + 4) + "|"]
    for h in HEADS:
        for comp, title in README_ROWS.items():
            rows = _rows(d, comp, h)
            if not rows:
                continue
            cells = []
            for f in FAMILIES:
                vals = [r[f] for r in rows if f in r]
                sd = statistics.stdev(vals) if len(vals) > 1 else None
                cells.append("–" if not vals else f"{statistics.mean(vals):+.1f}"
                             + (f" ± {sd:.1f}" if sd is not None else ""))
            worst = max(abs(r[f]) for r in rows for f in r)
            lines.append(f"| {h} | {title} | {len(rows)} | " + " | ".join(cells)
                         + f" | {worst:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--params", default=str(ROOT / "stages.yaml"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/acar_store_ap"))
    ap.add_argument("--heads", nargs="+", default=HEADS, choices=HEADS,
                    help="in this order (acfb needs acar before it)")
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--seed-data", nargs="*", default=[], metavar="SEED=DIR",
                    help="a seed's world made by dvc repro with --params (its data/)")
    ap.add_argument("--baseline", type=Path,
                    default=RESULTS / "world_alerted.json",
                    help="bench/world.py's JSON of the float16 runs of these seeds")
    ap.add_argument("--check-head", default=None, choices=HEADS,
                    help="retrain this float16 head of the first seed: does it reproduce "
                         "the baseline exactly?")
    ap.add_argument("--float16-retrain", action="store_true",
                    help="train the float16 heads of seeds without checkpoints (for the "
                         "no-retrain deltas; twice the time)")
    ap.add_argument("--out", type=Path, default=RESULTS / "store_ap.json")
    ap.add_argument("--table", action="store_true", help="print the table of --out only")
    args = ap.parse_args()
    if args.table:
        result = json.loads(args.out.read_text())
        result["deltas"] = deltas(result)
        print(table(result) + "\n\n" + readme_table(result))
        return
    import torch

    torch.set_num_threads(1)
    data = {int(k): Path(v) for k, v in (x.split("=", 1) for x in args.seed_data)}
    baseline = {r["seed"]: r["metrics"] for r in
                json.loads(args.baseline.read_text())["runs"]}
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result |= {"params": args.params, "baseline": str(args.baseline), "heads": HEADS,
               "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    result.setdefault("seeds", {})

    def save() -> None:
        result["deltas"] = deltas(result)
        result["table"] = table(result)
        result["readme_table"] = readme_table(result)
        result["load_avg_1min_at_save"] = os.getloadavg()[0]
        tmp = args.out.with_name(args.out.name + ".partial")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.rename(args.out)

    for i, seed in enumerate(args.seeds):
        t0 = time.perf_counter()
        s = Seed(seed, args.params, args.work / f"seed{seed}", data.get(seed))
        r = result["seeds"].setdefault(str(seed), {})
        r["float16_baseline"] = {h: {k: v for k, v in m.items()}
                                 for h, m in baseline.get(seed, {}).items() if h in HEADS}
        r.setdefault("float16_retrained", {})
        r["float16_store_from_float32_store"] = s.float16_from_float32
        for v in VARIANTS:
            r.setdefault(v, {"retrained": {}, "float16_model": {}})
        r["load_avg_1min_at_start"] = os.getloadavg()[0]
        if i == 0 and args.check_head:     # beside the float16 checkpoints, not over them
            h = args.check_head
            s.models["float16_check"] = s.work / "float16_check" / "models"
            s.stores["float16_check"] = s.stores["float16"]
            m = s.train_eval(h, "float16_check")
            b = r["float16_baseline"].get(h)
            r["check"] = {"head": h, "retrained": m, "baseline": b,
                          "identical": b is not None and all(
                              m[f] == b[f] for f in FAMILIES if b.get(f) is not None)}
            print("check", h, "reproduces the baseline exactly:", r["check"]["identical"],
                  _delta(m, b), flush=True)
            save()
        if args.float16_retrain:
            for h in args.heads:
                if not (s.models["float16"] / f"{h}.pt").exists():
                    r["float16_retrained"][h] = s.train_eval(h, "float16")
                    save()
        for v in args.variants:
            s.make_store(v)
            for h in args.heads:                       # no retraining: cheap, first
                if (m := s.eval_float16_model(h, v)) is not None:
                    r[v]["float16_model"][h] = m
                    ref = (r["float16_retrained"] or r["float16_baseline"]).get(h)
                    print(seed, v, "float16 model", h, _delta(m, ref), flush=True)
                    save()
            for h in args.heads:
                r[v]["retrained"][h] = m = s.train_eval(h, v)
                print(seed, v, "retrained", h, _delta(m, r["float16_baseline"].get(h)),
                      flush=True)
                r["seconds"] = s.times
                save()
        r["seconds"] = s.times
        r["total_seconds"] = round(time.perf_counter() - t0, 1)
        save()
    print(result["table"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
