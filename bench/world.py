"""The toy world's table: every head on several world seeds, mean ± std per family.

For each seed: synth (seed overridden) -> detect (GT boxes) -> extract -> train every
head of stages.yaml -> banks -> eval, all with the parameters of ``--params`` (the same
functions the DVC stages call).  Writes bench/results/world<tag>.json with per-seed
metrics, and prints the README's table (AP x 100 per family and overall mAP, then per
long-term class: every class of the label map's ``longterm`` superclass).

    uv run python bench/world.py --seeds 0 1 2     # ~5.5 min per seed on 2 idle cores
    uv run python bench/world.py --seeds 0 --params tests/stages_tiny.yaml --tag _tiny
    uv run python bench/world.py --seeds 0 --params bench/world_i3d.yaml --tag _i3d  # I3D
    uv run python bench/world.py --seeds 0 1 2 --heads linear acar acfb acfb_t acfb_s lfb
    uv run python bench/world.py --collect /tmp/acar_world/seed0 /tmp/acar_world/seed1

``--heads`` also takes the acfb variants of :data:`VARIANTS` (acfb_t: temporal encoding;
acfb_s: + the scene's context maps, from a second bank built with ``scene``); ``--collect``
tabulates heads that were trained by separate runs into the same ``--work``.
    uv run python bench/world.py --seeds 0 --params bench/world_temporal.yaml --tag _temporal \
        --heads linear acar s_only t_only     # features with 4 time bins (extract.temporal)

Run nothing else meanwhile: two torch processes on 2 cores slow each other 20-50x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import yaml

from pipeline import bank, detect, evaluate, extract, synth, train
from pipeline.config import load_config

HEADS = ["linear", "actor_actor", "acrn", "acar", "acfb", "lfb", "atr", "s_only", "t_only"]
DEFAULT_HEADS = HEADS[:6]   # s_only, t_only read time bins: --params bench/world_temporal.yaml
LONGTERM = [n for n, s in zip(synth.LABELMAP.names, synth.LABELMAP.superclasses, strict=True)
            if s == "longterm"]          # per-class columns of the table
BANK_OF = {"acfb": "acfb", "lfb": "lfb"}
# variants: a row name -> (the head, hparams over its stages.yaml ones); acfb's options
VARIANTS = {"acfb_t": ("acfb", {"temporal": "learned"}),                # + time encoding
            "acfb_s": ("acfb", {"temporal": "learned", "scene": True})}  # + the scene maps


def run_seed(seed: int, params: str, work: Path, heads: list[str] = DEFAULT_HEADS,
             reuse_world: bool = False) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    world, dets, feats = work / "synth", work / "detections.parquet", str(work / "features.zarr")
    times = {}

    def timed(name, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times[name] = round(time.perf_counter() - t0, 1)
        return out

    if reuse_world and (world / "val.csv").exists():     # the same seed's world, made before
        times["synth"] = None
    else:
        timed("synth", synth.run, load_config(synth.SynthConfig, "synth", params,
                                              {"seed": seed}), world)
    timed("detect", detect.run, load_config(detect.DetectConfig, "detect", params),
          world / "videos", dets, [world / "train.csv", world / "val.csv"])
    timed("extract", extract.run, load_config(extract.ExtractConfig, "extract", params),
          world / "videos", dets, feats)
    timed("bank_lfb", bank.run, load_config(bank.BankConfig, "bank.lfb", params,
                                            {"kind": "lfb"}), feats, dets, str(work / "lfb.zarr"))
    metrics = {}
    for head in heads:
        if head == "acfb":
            timed("bank_acfb", bank.run, load_config(bank.BankConfig, "bank.acfb", params,
                                                     {"kind": "acfb"}),
                  feats, dets, str(work / "acfb.zarr"), model=work / "acar.pt",
                  annotations=[world / "train.csv"])
        base, extra = VARIANTS.get(head, (head, {}))
        kind = BANK_OF.get(base)
        bank_url = str(work / f"{kind}.zarr") if kind else None
        if kind == "acfb" and not extra.get("scene") and not (work / "acfb.zarr").exists():
            raise SystemExit(f"{head} needs the acfb bank: run acar and acfb before it")
        if extra.get("scene"):          # the same bank, with the keyframes' context maps
            bank_url = str(work / "acfb_scene.zarr")
            timed(f"bank_{head}", bank.run, load_config(
                bank.BankConfig, "bank.acfb", params, {"kind": "acfb", "scene": True}),
                feats, dets, bank_url, model=work / "acar.pt", annotations=[world / "train.csv"])
        cfg = load_config(train.TrainConfig, ["train", f"heads.{base}"], params, {"head": base})
        cfg.hparams = {**cfg.hparams, **extra}
        if cfg.init:        # stages.yaml names data/models/<head>.pt: here it is work/<head>.pt
            cfg.init = str(work / Path(cfg.init).name)
        timed(f"train_{head}", train.run, cfg, feats, dets, world / "train.csv",
              world / "labelmap.pbtxt", work / f"{head}.pt", bank=bank_url)
        m = timed(f"eval_{head}", evaluate.run, load_config(evaluate.EvalConfig, "eval", params),
                  work / f"{head}.pt", feats, dets, world / "val.csv", world / "labelmap.pbtxt",
                  work / f"{head}_metrics.json", excluded=world / "excluded.csv", bank=bank_url)
        metrics[head] = {"mAP": m["mAP"], **m["per_superclass"],
                         "per_class": {c["name"]: c["ap"] for c in m["per_class"].values()}}
        print(seed, head, {k: round(100 * v, 1) for k, v in metrics[head].items()
                           if isinstance(v, float)},
              {k: round(100 * metrics[head]["per_class"][k], 1) for k in LONGTERM
               if metrics[head]["per_class"].get(k) is not None}, flush=True)
    return {"seed": seed, "metrics": metrics, "seconds": times}


def collect(seed_dir: Path, heads: list[str]) -> dict:
    """One seed's run from the metrics its heads left in ``seed_dir`` (``run_seed``'s
    layout): for heads trained by separate invocations of this script."""
    from pipeline.artifacts.metrics import read_eval

    metrics = {}
    for head in heads:
        path = seed_dir / f"{head}_metrics.json"
        if path.exists():
            m = read_eval(path)
            metrics[head] = {"mAP": m["mAP"], **m["per_superclass"],
                             "per_class": {c["name"]: c["ap"] for c in m["per_class"].values()}}
    return {"seed": int(seed_dir.name.removeprefix("seed")), "metrics": metrics}


def _value(metrics: dict, col: str) -> float | None:
    """A family / mAP column, or ``class:<name>`` (a per-class AP)."""
    if col.startswith("class:"):
        return metrics.get("per_class", {}).get(col[6:])
    return metrics.get(col)


def table(runs: list[dict], heads: list[str] = DEFAULT_HEADS) -> str:
    families = [f for f in synth.GROWN_FAMILIES        # those the runs' world has
                if any(f in r["metrics"].get(h, {}) for r in runs for h in heads)]
    cols = families + ["mAP"] + [f"class:{c}" for c in LONGTERM]
    lines = ["| head | " + " | ".join(c.replace("class:", "") for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for head in heads:
        cells = []
        for c in cols:
            vals = [100 * v for r in runs           # a head a seed did not run: left out
                    if (v := _value(r["metrics"].get(head, {}), c)) is not None]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            n = "" if len(vals) == len(runs) else f" ({len(vals)} seeds)"
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}{n}" if vals else "–")
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--params", default="stages.yaml")
    ap.add_argument("--work", default="/tmp/acar_world")
    ap.add_argument("--tag", default="")
    ap.add_argument("--heads", nargs="+", default=DEFAULT_HEADS, choices=HEADS + list(VARIANTS),
                    help="a subset, in this order (acfb needs acar before it; variants: "
                         + ", ".join(f"{k} = {b} {h}" for k, (b, h) in VARIANTS.items()) + ")")
    ap.add_argument("--collect", nargs="+", default=None, metavar="SEED_DIR",
                    help="run nothing: tabulate the <head>_metrics.json that runs of this "
                         "script left in these --work/seed<N> directories (heads run apart)")
    ap.add_argument("--reuse-world", action="store_true",
                    help="keep a world already in --work (synth is deterministic in the seed)")
    args = ap.parse_args()
    if args.collect:
        runs = [collect(Path(d), args.heads) for d in args.collect]
        heads = [h for h in args.heads if all(h in r["metrics"] for r in runs)]
        out = Path(__file__).parent / "results" / f"world{args.tag}.json"
        params = yaml.safe_load(Path(args.params).read_text())
        out.write_text(json.dumps({"params": params, "collected": args.collect, "runs": runs,
                                   "table": table(runs, heads)}, indent=1) + "\n")
        print(table(runs, heads))
        print(f"wrote {out}")
        return
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(seed, args.params, Path(args.work) / f"seed{seed}", args.heads,
                             args.reuse_world))
        runs[-1]["total_seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(__file__).parent / "results" / f"world{args.tag}.json"
    out.parent.mkdir(exist_ok=True)
    params = yaml.safe_load(Path(args.params).read_text())
    out.write_text(json.dumps({"params": params, "runs": runs, "table": table(runs, args.heads)},
                              indent=1) + "\n")
    print(table(runs, args.heads))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
