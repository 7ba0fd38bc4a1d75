"""Feature fusion on the toy world: a head on hoghof vs on hoghof + flow (concat).

One seed: synth -> detect (GT boxes) -> extract hoghof and extract flow (the Farneback
backbone, same grid) -> ``fuse`` (concat) -> train + eval each head on each store, with
the parameters of ``--params`` (the functions the DVC stages call).  Writes
bench/results/fuse<tag>.json: per store and head, mAP and AP per family (x 100), and the
seconds of every step.

    OMP_NUM_THREADS=1 nice -n 5 uv run python bench/fuse.py --seed 0
    OMP_NUM_THREADS=1 nice -n 5 uv run python bench/fuse.py --videos 60 40 --tag _small
                          # stages.yaml's world with 60 train / 40 val videos
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline import detect, evaluate, extract, fuse, synth, train
from pipeline.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="stages.yaml")
    ap.add_argument("--work", default="/tmp/acar_fuse")
    ap.add_argument("--tag", default="")
    ap.add_argument("--heads", nargs="+", default=["linear", "acar"])
    ap.add_argument("--videos", type=int, nargs=2, metavar=("TRAIN", "VAL"), default=None,
                    help="synth.num_train / num_val instead of --params' (a smaller world)")
    args = ap.parse_args()
    work = Path(args.work) / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    world, dets = work / "synth", work / "detections.parquet"
    times: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        times[name] = round(time.perf_counter() - t0, 1)
        return out

    p = args.params
    if not (world / "val.csv").exists():
        size = {"num_train": args.videos[0], "num_val": args.videos[1]} if args.videos else {}
        timed("synth", synth.run, load_config(synth.SynthConfig, "synth", p,
                                              {"seed": args.seed, **size}), world)
    timed("detect", detect.run, load_config(detect.DetectConfig, "detect", p),
          world / "videos", dets, [world / "train.csv", world / "val.csv"])
    stores = {"hoghof": str(work / "hoghof.zarr"),
              "hoghof+flow": str(work / "hoghof_flow.zarr"), "flow": str(work / "flow.zarr")}
    for bb in ("hoghof", "flow"):
        timed(f"extract_{bb}", extract.run,
              load_config(extract.ExtractConfig, "extract", p, {"backbone": bb}),
              world / "videos", dets, stores[bb])
    timed("fuse", fuse.run, fuse.FuseConfig("concat"), stores["hoghof"], stores["flow"],
          stores["hoghof+flow"])
    results: dict[str, dict] = {}
    out = Path(__file__).parent / "results" / f"fuse{args.tag}.json"     # after every head
    out.parent.mkdir(exist_ok=True)
    for name, feats in stores.items():
        for head in args.heads:
            tag = f"{name}/{head}"
            ckpt = work / f"{name.replace('+', '_')}_{head}.pt"
            cfg = load_config(train.TrainConfig, ["train", f"heads.{head}"], p, {"head": head})
            timed(f"train_{tag}", train.run, cfg, feats, dets, world / "train.csv",
                  world / "labelmap.pbtxt", ckpt)
            m = timed(f"eval_{tag}", evaluate.run, load_config(evaluate.EvalConfig, "eval", p),
                      ckpt, feats, dets, world / "val.csv", world / "labelmap.pbtxt",
                      work / f"{ckpt.stem}_metrics.json", excluded=world / "excluded.csv")
            results[tag] = {k: (None if v is None else round(100 * v, 2)) for k, v in
                            {"mAP": m["mAP"], **m["per_superclass"]}.items()}
            print(tag, results[tag], flush=True)
            out.write_text(json.dumps({"seed": args.seed, "params": args.params,
                                       "videos": args.videos,
                                       "results": results, "seconds": times}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
