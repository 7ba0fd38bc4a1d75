"""The four ensembles of `acar ensemble` over the toy world's heads, against the best head.

Reads a world that ``bench/world.py`` left in ``--work`` (its synth/, detections.parquet,
features.zarr, banks and <head>.pt; world.py itself keeps only the last head's
predictions), evaluates every head on val into its own prediction table (the functions the
DVC stages call: ``evaluate.run``), ensembles them with each scheme (``ensemble.run``) and
scores each ensemble as a head is scored (``evaluate.score``).  Writes
bench/results/ensemble<tag>.json (per head and per ensemble: mAP and AP per family, the
seconds each took) and prints the table (AP x 100).

    uv run python bench/world.py --seeds 0 --work /tmp/acar_world     # the heads first
    uv run python bench/ensemble.py --work /tmp/acar_world/seed0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline import ensemble, evaluate, synth
from pipeline.config import load_config

HEADS = ["linear", "actor_actor", "acrn", "acar", "acfb", "lfb"]
BANK_OF = {"acfb": "acfb", "lfb": "lfb"}


def row(metrics: dict) -> dict:
    return {"mAP": metrics["mAP"], **metrics["per_superclass"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/acar_world/seed0")
    ap.add_argument("--params", default="stages.yaml")
    ap.add_argument("--heads", nargs="+", default=HEADS)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    work = Path(args.work)
    world, dets, feats = work / "synth", work / "detections.parquet", str(work / "features.zarr")
    lm, val, excluded = world / "labelmap.pbtxt", world / "val.csv", world / "excluded.csv"
    out_dir = work / "ensemble"
    result: dict = {"work": str(work), "heads": {}, "ensembles": {}, "seconds": {}}
    members = []
    for head in args.heads:
        kind = BANK_OF.get(head)
        t0 = time.perf_counter()
        m = evaluate.run(load_config(evaluate.EvalConfig, "eval", args.params), work / f"{head}.pt",
                         feats, dets, val, lm, out_dir / head / "metrics.json",
                         out_dir / head / "predictions.csv", excluded=excluded,
                         bank=str(work / f"{kind}.zarr") if kind else None)
        result["seconds"][f"eval_{head}"] = round(time.perf_counter() - t0, 2)
        result["heads"][head] = row(m)
        members.append((head, out_dir / head / "predictions.parquet"))
        print(head, {k: round(100 * v, 1) for k, v in row(m).items() if v is not None},
              flush=True)
    for scheme in ensemble.SCHEMES:
        cfg = load_config(ensemble.EnsembleConfig, "ensemble", args.params, {"scheme": scheme})
        pred = out_dir / f"ensemble_{scheme}" / "predictions.csv"
        t0 = time.perf_counter()
        summary = ensemble.run(cfg, members, lm, pred, val, excluded)
        result["seconds"][f"ensemble_{scheme}"] = round(time.perf_counter() - t0, 2)
        m = evaluate.score(pred, val, lm, excluded, pred.parent / "metrics.json")
        result["ensembles"][scheme] = {**row(m), **({"k": summary["k"]} if "k" in summary
                                                    else {})}
        if scheme == "ap_weight":
            result["ap_weight_folds"] = summary["folds"]
        print(scheme, {k: round(100 * v, 1) for k, v in row(m).items() if v is not None},
              flush=True)
    best = max(result["heads"], key=lambda h: result["heads"][h]["mAP"])
    result["best_head"] = best
    result["vs_best_head"] = {s: round(100 * (e["mAP"] - result["heads"][best]["mAP"]), 2)
                              for s, e in result["ensembles"].items()}
    fams = [f for f in synth.FAMILIES if f in result["heads"][best]]
    lines = ["| model | " + " | ".join(fams) + " | mAP | vs best head |",
             "|---" * (len(fams) + 3) + "|"]
    for name, r, delta in [(h, result["heads"][h], None) for h in result["heads"]] + \
            [(f"ensemble {s}", e, result["vs_best_head"][s])
             for s, e in result["ensembles"].items()]:
        cells = ["–" if r.get(f) is None else f"{100 * r[f]:.1f}" for f in fams]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * r['mAP']:.1f} | "
                     + ("" if delta is None else f"{delta:+.1f}") + " |")
    result["table"] = "\n".join(lines)
    out = Path(__file__).parent / "results" / f"ensemble{args.tag}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["table"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
