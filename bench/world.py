"""The toy world's table: every head on several world seeds, mean ± std per family.

For each seed: synth (seed overridden) -> detect (GT boxes) -> extract -> train every
head of stages.yaml -> banks -> eval, all with the parameters of ``--params`` (the same
functions the DVC stages call).  Writes bench/results/world<tag>.json with per-seed
metrics, and prints the README's table (AP x 100 per family and overall mAP).

    uv run python bench/world.py --seeds 0 1 2     # ~5.5 min per seed on 2 idle cores
    uv run python bench/world.py --seeds 0 --params tests/stages_tiny.yaml --tag _tiny
    uv run python bench/world.py --seeds 0 --params bench/world_i3d.yaml --tag _i3d  # I3D
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

HEADS = ["linear", "actor_actor", "acrn", "acar", "acfb", "lfb", "s_only", "t_only"]
DEFAULT_HEADS = HEADS[:6]   # s_only, t_only read time bins: --params bench/world_temporal.yaml
BANK_OF = {"acfb": "acfb", "lfb": "lfb"}


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
        kind = BANK_OF.get(head)
        bank_url = str(work / f"{kind}.zarr") if kind else None
        cfg = load_config(train.TrainConfig, ["train", f"heads.{head}"], params, {"head": head})
        if cfg.init:        # stages.yaml names data/models/<head>.pt: here it is work/<head>.pt
            cfg.init = str(work / Path(cfg.init).name)
        timed(f"train_{head}", train.run, cfg, feats, dets, world / "train.csv",
              world / "labelmap.pbtxt", work / f"{head}.pt", bank=bank_url)
        m = timed(f"eval_{head}", evaluate.run, load_config(evaluate.EvalConfig, "eval", params),
                  work / f"{head}.pt", feats, dets, world / "val.csv", world / "labelmap.pbtxt",
                  work / f"{head}_metrics.json", excluded=world / "excluded.csv", bank=bank_url)
        metrics[head] = {"mAP": m["mAP"], **m["per_superclass"]}
        print(seed, head, {k: round(100 * v, 1) for k, v in metrics[head].items()
                           if v is not None}, flush=True)
    return {"seed": seed, "metrics": metrics, "seconds": times}


def table(runs: list[dict], heads: list[str] = DEFAULT_HEADS) -> str:
    cols = list(synth.FAMILIES) + ["mAP"]
    lines = ["| head | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for head in heads:
        cells = []
        for c in cols:
            vals = [100 * r["metrics"][head][c] for r in runs
                    if r["metrics"][head].get(c) is not None]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}" if vals else "–")
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--params", default="stages.yaml")
    ap.add_argument("--work", default="/tmp/acar_world")
    ap.add_argument("--tag", default="")
    ap.add_argument("--heads", nargs="+", default=DEFAULT_HEADS, choices=HEADS,
                    help="a subset, in this order (acfb needs acar before it)")
    ap.add_argument("--reuse-world", action="store_true",
                    help="keep a world already in --work (synth is deterministic in the seed)")
    args = ap.parse_args()
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
