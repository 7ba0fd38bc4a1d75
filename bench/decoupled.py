"""Decoupled long-tail fine-tuning on the toy world (issue 17 item 4; Feng et al. Table 3).

Stage one: a head trained as `train@<head>` trains it (stages.yaml ``train`` +
``heads.<head>``), the checkpoint that ``bench/world.py`` leaves in ``--work`` (trained
here if absent).  Stage two: ``acar train --finetune`` from it (the ``finetune`` section:
classifier only, class-balanced).  Both are evaluated on val; classes are ranked by their
number of training boxes, and the mean AP of the ``--rare`` least frequent and of the
``--rare`` most frequent classes is reported before and after, with mAP and every class.
Writes bench/results/decoupled<tag>.json.

    uv run python bench/world.py --seeds 0 --heads linear --work /tmp/w     # the world
    uv run python bench/decoupled.py --work /tmp/w/seed0 --heads linear --tag _linear
    ... --control: also stage two with sampler: shuffle (what the extra epochs alone do)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import yaml

from pipeline import evaluate, train
from pipeline.artifacts.annotations import read_annotations
from pipeline.artifacts.labelmap import read_labelmap
from pipeline.config import load_config


def box_counts(annotations: Path) -> dict[int, int]:
    """action id -> its number of training boxes (a box with k labels counts for each)."""
    gt = read_annotations(annotations)
    return {int(a): int(n) for a, n in gt.groupby("action_id").size().items()}


def run_head(head: str, params: str, work: Path, rare: int, control: bool = False,
             epochs: int | None = None) -> dict:
    world, dets, feats = work / "synth", work / "detections.parquet", str(work / "features.zarr")
    lm = read_labelmap(world / "labelmap.pbtxt")
    times: dict[str, float] = {}
    one, two = work / f"{head}.pt", work / f"{head}_cb.pt"
    if not one.exists():
        t0 = time.perf_counter()
        cfg = load_config(train.TrainConfig, ["train", f"heads.{head}"], params, {"head": head})
        train.run(cfg, feats, dets, world / "train.csv", world / "labelmap.pbtxt", one)
        times["stage_one"] = round(time.perf_counter() - t0, 1)
    models = {"before": one, "after": two}
    over = {"head": head, "init": str(one), "epochs": epochs}
    cfg = load_config(train.TrainConfig, ["train", f"heads.{head}", "finetune"], params, over)
    runs = [("after", cfg, two)]
    if control:        # the same stage two with the plain sampler: what the epochs alone do
        models["shuffle"] = work / f"{head}_shuffle.pt"
        ctl = load_config(train.TrainConfig, ["train", f"heads.{head}", "finetune"], params,
                          {**over, "sampler": "shuffle"})
        runs.append(("shuffle", ctl, models["shuffle"]))
    for name, c, out in runs:
        t0 = time.perf_counter()
        train.run(c, feats, dets, world / "train.csv", world / "labelmap.pbtxt", out)
        times[f"stage_two_{name}"] = round(time.perf_counter() - t0, 1)
    ecfg = load_config(evaluate.EvalConfig, "eval", params)
    metrics = {}
    for name, model in models.items():
        metrics[name] = evaluate.run(ecfg, model, feats, dets, world / "val.csv",
                                     world / "labelmap.pbtxt", work / f"{model.stem}_metrics.json",
                                     excluded=world / "excluded.csv")
    counts = box_counts(world / "train.csv")
    total = sum(counts.values())
    ranked = sorted(lm.ids, key=lambda a: (counts.get(a, 0), a))     # rarest first
    classes = []
    for a in ranked:
        classes.append({"id": a, "name": lm.names[lm.ids.index(a)],
                        "train_boxes": counts.get(a, 0),
                        "share": round(counts.get(a, 0) / total, 4),
                        **{f"ap_{k}": metrics[k]["per_class"][str(a)]["ap"] for k in models}})

    def mean_ap(rows: list[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.mean(vals) if vals else None

    # the groups: classes with training boxes and val boxes (an AP), ranked by train boxes
    scored = [c for c in classes if c["train_boxes"] and c["ap_before"] is not None]
    groups = {f"bottom{rare}": scored[:rare], f"top{rare}": scored[-rare:], "all": scored}
    summary = {g: {k: mean_ap(rows, f"ap_{k}") for k in models} for g, rows in groups.items()}
    summary["mAP"] = {k: metrics[k]["mAP"] for k in models}
    return {"head": head, "finetune": {k: getattr(cfg, k) for k in
                                       ("train", "sampler", "epochs", "lr", "batch_size")},
            "summary": summary, "classes": classes, "seconds": times}


def table(runs: list[dict]) -> str:
    lines = ["| head | group | before | after (class-balanced) | change | "
             "control (shuffle) | change |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        for g, v in r["summary"].items():
            if v["before"] is None or v["after"] is None:
                continue
            ctl = v.get("shuffle")
            tail = (f"{100 * ctl:.1f} | {100 * (ctl - v['before']):+.1f}" if ctl is not None
                    else "– | –")
            lines.append(f"| {r['head']} | {g} | {100 * v['before']:.1f} | "
                         f"{100 * v['after']:.1f} | {100 * (v['after'] - v['before']):+.1f} | "
                         f"{tail} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a world seed's folder (bench/world.py)")
    ap.add_argument("--heads", nargs="+", default=["linear"])
    ap.add_argument("--params", default="stages.yaml")
    ap.add_argument("--rare", type=int, default=3, help="classes in the bottom and top groups")
    ap.add_argument("--tag", default="")
    ap.add_argument("--control", action="store_true",
                    help="also stage two with sampler: shuffle (the same epochs and lr)")
    ap.add_argument("--epochs", type=int, default=None, help="stage two's  [finetune.epochs]")
    args = ap.parse_args()
    runs = [run_head(h, args.params, Path(args.work), args.rare, args.control, args.epochs)
            for h in args.heads]
    out = Path(__file__).parent / "results" / f"decoupled{args.tag}.json"
    out.parent.mkdir(exist_ok=True)
    params = yaml.safe_load(Path(args.params).read_text())
    out.write_text(json.dumps({"params": params, "work": args.work, "runs": runs,
                               "table": table(runs)}, indent=1) + "\n")
    print(table(runs))
    for r in runs:
        for c in [c for c in r["classes"] if c["train_boxes"]][:args.rare]:
            print(r["head"], c)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
