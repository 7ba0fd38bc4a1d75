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

Issue 17's rows (item 9), on the grown world with the temporal store (one store for every
head: those that need no time average its bins):
    uv run python bench/world.py --seeds 0 1 2 --params grown/stages.yaml --tag _grown \
        --heads linear atr atr_nopos t_only acar s_only t_only_mem linear_cb acar_cb --ensembles
``t_only_mem``: stage two of t_only (its memory bank, ``bank.memory``, made from t_only.pt;
the head starts from t_only.pt, with ``window`` / ``max_per_step`` of :data:`MEMORY`);
``<head>_cb``: decoupled fine-tuning (stages.yaml ``finetune``, from <head>.pt);
``--ensembles``: the four schemes of pipeline/ensemble.py over the seed's single heads
(not the fine-tuned ones), rows ``ensemble_<scheme>``, and ``ensemble_best`` (the best of the four).
The JSON is rewritten after every head (``partial: true`` until the run ends);
``--reuse`` keeps what a previous run left in ``--work`` (the world and the trained heads
with their metrics; the store and the banks are completed, never taken as done).

Run nothing else meanwhile: two torch processes on 2 cores slow each other 20-50x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import yaml

from pipeline import bank, detect, evaluate, extract, synth, train
from pipeline.config import load_config

HEADS = ["linear", "actor_actor", "acrn", "acar", "acfb", "lfb", "atr", "s_only", "t_only",
         "t_only_mem", "linear_cb", "acar_cb"]
DEFAULT_HEADS = HEADS[:6]   # s_only, t_only read time bins: --params bench/world_temporal.yaml
LONGTERM = [n for n, s in zip(synth.LABELMAP.names, synth.LABELMAP.superclasses, strict=True)
            if s == "longterm"]          # per-class columns of the table
BANK_OF = {"acfb": "acfb", "lfb": "lfb", "t_only_mem": "memory"}
MEMORY = {"window": 10, "max_per_step": 5, "mem_time": True}   # t_only_mem: the bank's reach
# (±10 s) and each slot's second relative to the keyframe (without it: +0.6 on longterm)
STAGE_TWO = {"t_only_mem": "t_only", "linear_cb": "linear", "acar_cb": "acar"}  # row: stage one
RARE_SHARE = 0.02        # the rare classes: under 2% of the train boxes (issue 17, item 8)
# variants: a row name -> (the head, hparams over its stages.yaml ones); acfb's options
VARIANTS = {"acfb_t": ("acfb", {"temporal": "learned"}),                # + time encoding
            "acfb_s": ("acfb", {"temporal": "learned", "scene": True}),  # + the scene maps
            "atr_nopos": ("atr", {"pos": False})}   # atr without where each cell lies
NOT_MEMBERS = {"atr_nopos"}     # ablation rows: not ensemble members


def rare_classes(world: Path, share: float = RARE_SHARE) -> list[str]:
    """The classes under ``share`` of the train boxes (person-keyframes), rarest first: the
    report's own count (``acar report --train-annotations``)."""
    from pipeline.artifacts.labelmap import read_labelmap
    from pipeline.report import rare_classes as counted

    return counted(world / "train.csv", read_labelmap(world / "labelmap.pbtxt"), share)


def row_of(m: dict, rare: list[str]) -> dict:
    """A table row from eval metrics: mAP, per family, per class, the rare classes' mean."""
    per_class = {c["name"]: c["ap"] for c in m["per_class"].values()}
    vals = [per_class[c] for c in rare if per_class.get(c) is not None]
    return {"mAP": m["mAP"], **m["per_superclass"], "per_class": per_class,
            "rare": statistics.mean(vals) if vals else None}


def run_seed(seed: int, params: str, work: Path, heads: list[str] = DEFAULT_HEADS,
             reuse_world: bool = False, ensembles: bool = False, reuse: bool = False,
             save=None) -> dict:
    """One seed: the world, its store, then every row of ``heads`` in order (``save``, if
    given, is called with the partial result after each); ``reuse``: keep the world, the
    store, the banks and the heads (with their metrics) already in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    world, dets, feats = work / "synth", work / "detections.parquet", str(work / "features.zarr")
    times: dict = {}
    metrics: dict = {}
    result = {"seed": seed, "metrics": metrics, "seconds": times}

    def timed(name, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        times[name] = round(time.perf_counter() - t0, 1)
        return out

    def done(path: Path, name: str) -> bool:        # reused: not rebuilt, no time
        if reuse and path.exists():
            times.setdefault(name, None)
            return True
        return False

    if (reuse_world or reuse) and (world / "val.csv").exists():   # synth is deterministic
        times["synth"] = None
    else:
        timed("synth", synth.run, load_config(synth.SynthConfig, "synth", params,
                                              {"seed": seed}), world)
    if not done(dets, "detect"):
        timed("detect", detect.run, load_config(detect.DetectConfig, "detect", params),
              world / "videos", dets, [world / "train.csv", world / "val.csv"])
    # the store and the banks: always run, as they complete what a stopped run left
    # (each reuses its finished videos), so a partial one is never taken as done
    timed("extract", extract.run, load_config(extract.ExtractConfig, "extract", params),
          world / "videos", dets, feats)
    timed("bank_lfb", bank.run, load_config(bank.BankConfig, "bank.lfb", params,
                                            {"kind": "lfb"}),
          feats, dets, str(work / "lfb.zarr"))
    rare = rare_classes(world)
    result["rare"] = rare
    ecfg = load_config(evaluate.EvalConfig, "eval", params)
    members = []
    for head in heads:
        if head == "acfb":
            timed("bank_acfb", bank.run, load_config(bank.BankConfig, "bank.acfb", params,
                                                     {"kind": "acfb"}),
                  feats, dets, str(work / "acfb.zarr"), model=work / "acar.pt",
                  annotations=[world / "train.csv"])
        one = STAGE_TWO.get(head)
        if one is not None and not (work / f"{one}.pt").exists():
            raise SystemExit(f"{head} starts from {one}.pt: run {one} before it")
        if head == "t_only_mem":
            timed("bank_memory", bank.run, load_config(bank.BankConfig, "bank.memory", params,
                                                       {"kind": "memory"}),
                  feats, dets, str(work / "memory.zarr"), model=work / "t_only.pt",
                  annotations=[world / "train.csv"])
        base, extra = VARIANTS.get(head, (one or head, {}))
        kind = BANK_OF.get(head) or BANK_OF.get(base)
        bank_url = str(work / f"{kind}.zarr") if kind else None
        if kind == "acfb" and not extra.get("scene") and not (work / "acfb.zarr").exists():
            raise SystemExit(f"{head} needs the acfb bank: run acar and acfb before it")
        if extra.get("scene"):          # the same bank, with the keyframes' context maps
            bank_url = str(work / "acfb_scene.zarr")
            timed(f"bank_{head}", bank.run, load_config(
                bank.BankConfig, "bank.acfb", params, {"kind": "acfb", "scene": True}),
                feats, dets, bank_url, model=work / "acar.pt", annotations=[world / "train.csv"])
        sections = ["train", f"heads.{base}"] + (["finetune"] if head.endswith("_cb") else [])
        cfg = load_config(train.TrainConfig, sections, params, {"head": base})
        cfg.hparams = {**cfg.hparams, **extra, **(MEMORY if head == "t_only_mem" else {})}
        if one is not None:             # stage two starts from stage one's head
            cfg.init = str(work / f"{one}.pt")
        elif cfg.init:      # stages.yaml names data/models/<head>.pt: here it is work/<head>.pt
            cfg.init = str(work / Path(cfg.init).name)
        model, mpath = work / f"{head}.pt", work / f"{head}_metrics.json"
        pred = work / "predictions" / head / "predictions.csv"
        if not done(model, f"train_{head}"):
            timed(f"train_{head}", train.run, cfg, feats, dets, world / "train.csv",
                  world / "labelmap.pbtxt", model, bank=bank_url)
        if reuse and mpath.exists() and pred.exists() and times.get(f"train_{head}") is None:
            from pipeline.artifacts.metrics import read_eval
            m, times[f"eval_{head}"] = read_eval(mpath), None
        else:
            m = timed(f"eval_{head}", evaluate.run, ecfg, model, feats, dets, world / "val.csv",
                      world / "labelmap.pbtxt", mpath, pred, excluded=world / "excluded.csv",
                      bank=bank_url)
        metrics[head] = row_of(m, rare)
        if not head.endswith("_cb") and head not in NOT_MEMBERS:
            members.append((head, pred.with_suffix(".parquet")))
        _print(seed, head, metrics[head], rare)
        if save is not None:
            save(result)
    if ensembles and len(members) >= 2:
        run_ensembles(params, work, members, rare, metrics, times)
        if save is not None:
            save(result)
    return result


def run_ensembles(params: str, work: Path, members: list[tuple[str, Path]], rare: list[str],
                  metrics: dict, times: dict) -> None:
    """The four schemes over ``members`` (name, prediction table), scored as a head (rows
    ``ensemble_<scheme>``), and ``ensemble_best``: the best of them by mAP (its scheme in
    ``scheme``)."""
    from pipeline import ensemble

    world = work / "synth"
    lm, val, excluded = world / "labelmap.pbtxt", world / "val.csv", world / "excluded.csv"
    for scheme in ensemble.SCHEMES:
        cfg = load_config(ensemble.EnsembleConfig, "ensemble", params, {"scheme": scheme})
        pred = work / "predictions" / f"ensemble_{scheme}" / "predictions.csv"
        timed_at = time.perf_counter()
        summary = ensemble.run(cfg, members, lm, pred, val, excluded)
        m = evaluate.score(pred, val, lm, excluded, pred.parent / "metrics.json")
        times[f"ensemble_{scheme}"] = round(time.perf_counter() - timed_at, 1)
        metrics[f"ensemble_{scheme}"] = {**row_of(m, rare), "members": [n for n, _ in members],
                                    **({"k": summary["k"]} if "k" in summary else {})}
        _print(None, f"ensemble_{scheme}", metrics[f"ensemble_{scheme}"], rare)
    best = max(ensemble.SCHEMES, key=lambda sc: metrics[f"ensemble_{sc}"]["mAP"])
    metrics["ensemble_best"] = {**metrics[f"ensemble_{best}"], "scheme": best}


def _print(seed, head: str, row: dict, rare: list[str]) -> None:
    print(seed, head, {k: round(100 * v, 1) for k, v in row.items() if isinstance(v, float)},
          {k: round(100 * row["per_class"][k], 1) for k in LONGTERM + rare
           if row["per_class"].get(k) is not None}, flush=True)


def collect(seed_dir: Path, heads: list[str]) -> dict:
    """One seed's run from the metrics its heads left in ``seed_dir`` (``run_seed``'s
    layout): for heads trained by separate invocations of this script."""
    from pipeline.artifacts.metrics import read_eval

    metrics: dict = {}
    rare = rare_classes(seed_dir / "synth")
    for head in heads:
        path = seed_dir / f"{head}_metrics.json"
        if path.exists():
            m = read_eval(path)
            metrics[head] = row_of(m, rare)
    out = {"seed": int(seed_dir.name.removeprefix("seed")), "metrics": metrics, "rare": rare}
    ens = {p.name.removesuffix("_metrics.json"): p
           for p in sorted(seed_dir.glob("ensemble_*_metrics.json"))}
    for name, path in ens.items():              # the ensembles, and the best of them
        metrics[name] = row_of(read_eval(path), rare)
    if ens:
        best = max(ens, key=lambda n: metrics[n]["mAP"])
        metrics["ensemble_best"] = {**metrics[best], "scheme": best.removeprefix("ensemble_")}
    return out


def _value(metrics: dict, col: str) -> float | None:
    """A family / mAP column, or ``class:<name>`` (a per-class AP)."""
    if col.startswith("class:"):
        return metrics.get("per_class", {}).get(col[6:])
    return metrics.get(col)


def row_names(runs: list[dict], heads: list[str]) -> list[str]:
    """The table's rows: ``heads``, then the ensemble rows any run has."""
    ens = sorted({h for r in runs for h in r["metrics"] if h.startswith("ensemble_")},
                 key=lambda h: (h == "ensemble_best", h))
    return list(heads) + [h for h in ens if h not in heads]


def table(runs: list[dict], heads: list[str] = DEFAULT_HEADS) -> str:
    heads = row_names(runs, heads)
    families = [f for f in synth.GROWN_FAMILIES        # those the runs' world has
                if any(f in r["metrics"].get(h, {}) for r in runs for h in heads)]
    rare = [c for c in dict.fromkeys(c for r in runs for c in r.get("rare", []))
            if c not in LONGTERM]
    cols = families + ["mAP"] + [f"class:{c}" for c in LONGTERM + rare] + \
        (["rare"] if rare else [])
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


def orderings(run: dict) -> list[dict]:
    """The report's family-level orderings (pipeline/report.py CHECKS) on one seed's rows,
    each as id, statement, head, measured margin, passed (None: skipped, with why)."""
    from pipeline import report

    table = {h: {**{k: None if v is None else 100 * v for k, v in m.items()
                    if isinstance(v, float) or v is None},
                 **{c: None if v is None else 100 * v for c, v in m.get("per_class", {}).items()}}
             for h, m in run["metrics"].items()}
    fams = [f for f in synth.GROWN_FAMILIES if any(f in t for t in table.values())]
    return [{k: c.get(k) for k in ("id", "statement", "head", "measured", "passed", "skipped",
                                   "map_change", "required")}
            for c in report.check_table(table, fams)]


def margin_table(runs: list[dict]) -> tuple[list[dict], str]:
    """Each ordering's measured margin per seed, their mean and std, and whether every seed
    clears the report's threshold (pipeline/report.py CHECKS): rows, and a markdown table."""
    from pipeline import report

    rows = []
    per_run = [r.get("orderings") or orderings(r) for r in runs]
    checks = {c.id: c for c in report.CHECKS}
    for oid in dict.fromkeys(o["id"] for ords in per_run for o in ords):
        got = [next((o for o in ords if o["id"] == oid), {}) for ords in per_run]
        vals = [o["measured"] for o in got if o.get("measured") is not None]
        if not vals:
            continue
        rows.append({"id": oid, "statement": next(o["statement"] for o in got if o),
                     "threshold": checks[oid.split(".")[0]].threshold,
                     "seeds": [o.get("measured") for o in got],
                     "passed": [o.get("passed") for o in got],
                     "mean": statistics.mean(vals),
                     "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     "min": min(vals),
                     "required": checks[oid.split(".")[0]].required})
    lines = ["| ordering | threshold | " + " | ".join(f"seed {r['seed']}" for r in runs)
             + " | mean ± std | every seed |", "|---" * (len(runs) + 4) + "|"]
    for m in rows:
        cells = ["–" if v is None else f"{v:+.1f} {'✓' if ok else '✗'}"
                 for v, ok in zip(m["seeds"], m["passed"], strict=True)]
        every = all(m["passed"]) and len([v for v in m["seeds"] if v is not None]) == len(runs)
        mark = ("✓" if every else "✗") if m["required"] else \
            f"○ observation ({'✓' if every else '✗'})"
        lines.append(f"| ({m['id']}) {m['statement']} | {m['threshold']:+g} | "
                     + " | ".join(cells) + f" | {m['mean']:+.1f} ± {m['std']:.1f} | "
                     + mark + " |")
    return rows, "\n".join(lines)


def write_json(out: Path, doc: dict) -> None:
    """``out`` whole or not at all (a temp file renamed into place)."""
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)


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
    ap.add_argument("--reuse", action="store_true",
                    help="keep everything a previous run left in --work: the world, the store, "
                         "the banks, the heads and their metrics (only missing rows run)")
    ap.add_argument("--ensembles", action="store_true",
                    help="also the four ensembles over each seed's single heads, and ensemble_best")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="run nothing: one table of the runs of these world*.json files "
                         "(seeds run apart), written to world<tag>.json")
    args = ap.parse_args()
    out = Path(__file__).parent / "results" / f"world{args.tag}.json"
    params = yaml.safe_load(Path(args.params).read_text())
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge]
        runs = [r for d in docs for r in d["runs"]]
        for r in runs:
            r["orderings"] = orderings(r)
        margins, mtable = margin_table(runs)
        write_json(out, {"params": docs[0]["params"], "merged": args.merge, "runs": runs,
                         "table": table(runs, args.heads), "margins": margins,
                         "margin_table": mtable})
        print(table(runs, args.heads))
        print(mtable)
        print(f"wrote {out}")
        return
    if args.collect:
        runs = [collect(Path(d), args.heads) for d in args.collect]
        for r in runs:
            r["orderings"] = orderings(r)
        heads = [h for h in args.heads if all(h in r["metrics"] for r in runs)]
        write_json(out, {"params": params, "collected": args.collect, "runs": runs,
                         "table": table(runs, heads)})
        print(table(runs, heads))
        print(f"wrote {out}")
        return
    runs: list[dict] = []

    def save(partial: dict) -> None:             # after every head: nothing computed is lost
        write_json(out, {"params": params, "partial": True, "runs": runs + [partial],
                         "table": table(runs + [partial], args.heads)})

    for seed in args.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(seed, args.params, Path(args.work) / f"seed{seed}", args.heads,
                             args.reuse_world, args.ensembles, args.reuse, save))
        runs[-1]["total_seconds"] = round(time.perf_counter() - t0, 1)
        runs[-1]["uptime"] = _load()
        runs[-1]["orderings"] = orderings(runs[-1])
    write_json(out, {"params": params, "runs": runs, "table": table(runs, args.heads)})
    print(table(runs, args.heads))
    print(f"wrote {out}")


def _load() -> list[float] | None:
    """The load averages (1, 5, 15 min) when a seed ended: cores are shared."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    main()
