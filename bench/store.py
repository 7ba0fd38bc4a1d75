"""Store size: int8 against float16 features, in accuracy and in bytes.

``world``: a toy world already made with ``--params`` (``--data``: synth/,
detections.parquet and its float16 features.zarr; ``dvc repro``'s data/ by default), and
the same store quantised to int8 exactly as ``extract.dtype: int8`` writes it; then, for
each, what bench/world.py's ``run_seed`` does after extract: banks, every head, eval.
Writes bench/results/store_world.json: the per-family AP x 100 of each head and dtype,
and the int8 - float16 differences (target: |diff| <= 0.5 point per head and family).

    nice -n 5 uv run python bench/store.py world --data ../main/data   # 2 x 6 heads

``project``: the projected AVA train + val store (270 k keyframes) per backbone, view count
(1; 3 scales + flip = 6) and dtype, from the bytes per stored value that
``bench/extract.py`` measured (bench/results/extract_<backbone>.json; float16 and int8 of
the same maps).  Writes bench/results/store.json and prints the README's table.

    uv run python bench/store.py project

``temporal``: the bytes per keyframe of ``extract.temporal`` mean, 1, 2 and 4 on the toy
world of ``--data`` (its first ``--videos`` videos, extracted again with ``--params``'
extract section, temporal overridden), and whether the ``mean`` store is byte for byte the
world's own store (every file of those videos' groups).  Writes
bench/results/store_temporal.json.

    nice -n 5 uv run python bench/store.py temporal --data ../main/data --videos 60
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

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


def quantised_copy(src_url: str, dst_url: str) -> None:
    """``src`` (float16) written again as ``extract.dtype: int8`` would write it: same
    groups, attrs (+ ``extra.dtype``), views, through the stage's writer
    (``FeatureStore.write_rows``; tests/test_store_dtype.py checks that extract --dtype int8
    gives exactly this)."""
    from pipeline.artifacts.features import FeatureStore

    src, dst = FeatureStore(src_url), FeatureStore(dst_url, mode="a")
    for video in src.videos():
        attrs = src.attrs(video)
        attrs = {k: v for k, v in attrs.items() if k != "complete"}
        attrs["extra"] = {**attrs.get("extra", {}), "dtype": "int8"}
        dst.begin_video(video, src.timestamps(video), attrs)
        for name in src.spec(video).views:
            maps = src.read(video, name)
            arr = dst.create_view(video, src.view(video, name), maps.shape, "int8")
            dst.write_rows(video, arr, 0, maps)
        dst.finish_video(video)


def world(params: str, data: Path, work: Path, heads: list[str], out: Path) -> dict:
    """float16 (the world's own store) against its int8 copy: banks, then each head on both
    dtypes in turn (bench/world.py's calls after extract); the JSON is rewritten after every
    head, so a run cut short keeps the heads it finished."""
    from pipeline import bank, evaluate, train
    from pipeline.config import load_config

    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    toy = importlib.import_module("world")            # bench/world.py: its table
    work.mkdir(parents=True, exist_ok=True)
    world_dir, dets = data / "synth", data / "detections.parquet"
    stores = {"float16": str(data / "features.zarr"), "int8": str(work / "features_int8.zarr")}
    t0 = time.perf_counter()
    quantised_copy(stores["float16"], stores["int8"])
    copy_s = time.perf_counter() - t0
    runs = {d: {"metrics": {}, "seconds": {}} for d in stores}

    def timed(dtype, name, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        runs[dtype]["seconds"][name] = round(time.perf_counter() - t0, 1)
        return out

    for dtype, feats in stores.items():
        timed(dtype, "bank_lfb", bank.run, load_config(bank.BankConfig, "bank.lfb", params,
                                                       {"kind": "lfb"}),
              feats, dets, str(work / dtype / "lfb.zarr"))

    def size(url: str) -> int:
        return sum(f.stat().st_size for f in Path(url).rglob("*") if f.is_file())

    from pipeline.artifacts.features import FeatureStore

    fs = FeatureStore(stores["float16"])
    vids = fs.videos()
    spec0 = fs.spec(vids[0])
    keyframes = sum(len(fs.timestamps(v)) for v in vids)
    shape = list(fs.group(vids[0])[spec0.views[0]].shape[1:])
    result: dict = {}
    for head in heads:
        for dtype, feats in stores.items():
            w = work / dtype
            if head == "acfb":
                timed(dtype, "bank_acfb", bank.run, load_config(
                    bank.BankConfig, "bank.acfb", params, {"kind": "acfb"}),
                    feats, dets, str(w / "acfb.zarr"), model=w / "acar.pt",
                    annotations=[world_dir / "train.csv"])
            bank_url = str(w / f"{head}.zarr") if head in ("acfb", "lfb") else None
            cfg = load_config(train.TrainConfig, ["train", f"heads.{head}"], params,
                              {"head": head})
            if cfg.init:
                cfg.init = str(w / Path(cfg.init).name)
            timed(dtype, f"train_{head}", train.run, cfg, feats, dets,
                  world_dir / "train.csv", world_dir / "labelmap.pbtxt", w / f"{head}.pt",
                  bank=bank_url)
            m = timed(dtype, f"eval_{head}", evaluate.run,
                      load_config(evaluate.EvalConfig, "eval", params), w / f"{head}.pt", feats,
                      dets, world_dir / "val.csv", world_dir / "labelmap.pbtxt",
                      w / f"{head}_metrics.json", excluded=world_dir / "excluded.csv",
                      bank=bank_url)
            runs[dtype]["metrics"][head] = {"mAP": m["mAP"], **m["per_superclass"]}
            print(dtype, head, {k: round(100 * v, 1) for k, v in
                                runs[dtype]["metrics"][head].items() if v is not None},
                  flush=True)
        done = list(runs["int8"]["metrics"])
        diff = {h: {fam: round(100 * (runs["int8"]["metrics"][h][fam] - v), 2)
                    for fam, v in runs["float16"]["metrics"][h].items()
                    if v is not None and runs["int8"]["metrics"][h][fam] is not None}
                for h in done}
        worst = max(abs(x) for d in diff.values() for x in d.values())
        result = {"params": params, "world": str(data), "heads_done": done,
                  "heads_asked": heads, "runs": runs,
                  "store_bytes": {d: size(u) for d, u in stores.items()},
                  "backbone": spec0.backbone, "keyframes": keyframes, "map_shape": shape,
                  "views": len(spec0.views),
                  "quantise_copy_s": round(copy_s, 1),
                  "int8_minus_float16_ap_points": diff, "max_abs_diff_points": worst,
                  "target_points": 0.5, "met": worst <= 0.5,
                  "table_float16": toy.table([runs["float16"]], done),
                  "table_int8": toy.table([runs["int8"]], done),
                  "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def temporal(params: str, data: Path, work: Path, videos: int, bins: list[str]) -> dict:
    """Extract the first ``videos`` videos of the world in ``data`` once per ``temporal``
    value; bytes per keyframe (stored: files on disk; raw: values x itemsize) and seconds,
    and the ``mean`` store's files against ``data/features.zarr``'s."""
    import pandas as pd

    from pipeline import extract
    from pipeline.artifacts.detections import read_detections, write_detections
    from pipeline.artifacts.features import FeatureStore
    from pipeline.config import load_config

    work.mkdir(parents=True, exist_ok=True)
    dets, meta = read_detections(data / "detections.parquet")
    keep = sorted(set(dets["video_id"]))[:videos]
    sub = work / "detections.parquet"
    write_detections(pd.DataFrame(dets[dets["video_id"].isin(keep)]), sub, meta)
    out: dict = {"params": params, "videos": len(keep), "runs": {}}
    for t in bins:
        url = work / f"features_{t}.zarr"
        cfg = load_config(extract.ExtractConfig, "extract", params, {"temporal": t})
        t0 = time.perf_counter()
        assert extract.run(cfg, data / "synth" / "videos", sub, str(url)) == []
        seconds = time.perf_counter() - t0
        store = FeatureStore(str(url))
        k = sum(len(store.timestamps(v)) for v in keep)
        view = store.spec(keep[0]).views[0]
        arr = store.group(keep[0])[view]
        stored = sum(f.stat().st_size for v in keep for f in (url / v).rglob("*")
                     if f.is_file() and f.name != "zarr.json")
        raw = sum(int(math.prod(store.group(v)[view].shape)) * arr.dtype.itemsize for v in keep)
        out["runs"][t] = {"map": list(arr.shape[1:]), "keyframes": k,
                          "stored_bytes_per_keyframe": round(stored / k),
                          "raw_bytes_per_keyframe": round(raw / k),
                          "extract_seconds": round(seconds, 1)}
        print(t, out["runs"][t], flush=True)
    if "mean" in bins:
        ref, new = data / "features.zarr", work / "features_mean.zarr"
        differ = [str(f.relative_to(new)) for v in keep for f in sorted((new / v).rglob("*"))
                  if f.is_file() and (ref / f.relative_to(new)).read_bytes() != f.read_bytes()]
        missing = [str(f.relative_to(ref)) for v in keep for f in (ref / v).rglob("*")
                   if f.is_file() and not (new / f.relative_to(ref)).exists()]
        out["mean_equals_the_world_store"] = {"files_differing": differ, "files_missing": missing,
                                              "identical": not differ and not missing}
    base = out["runs"].get("1") or next(iter(out["runs"].values()))
    for r in out["runs"].values():
        r["stored_vs_1_bin"] = round(r["stored_bytes_per_keyframe"]
                                     / base["stored_bytes_per_keyframe"], 2)
    return out


def extract_results() -> dict[str, dict]:
    """backbone -> its bench/extract.py result with both dtypes, the largest map measured
    (the closest to AVA's) where there are several."""
    found: dict[str, dict] = {}
    for path in sorted(RESULTS.glob("extract_*.json")):
        r = json.loads(path.read_text())
        if "dtypes" not in r:
            continue
        r["file"] = path.name
        old = found.get(r["backbone"])
        if old is None or math.prod(r["map_shape"][1:]) > math.prod(old["map_shape"][1:]):
            found[r["backbone"]] = r
    return found


def project() -> dict:
    rows, measured = [], extract_results()
    world = RESULTS / "store_world.json"
    if world.exists():                        # the toy world's store: bytes of all groups
        w = json.loads(world.read_text())
        if "keyframes" not in w:              # written by an older version of this script
            from pipeline.artifacts.features import FeatureStore

            fs = FeatureStore(str(Path(w["world"]) / "features.zarr"))
            vids = fs.videos()
            spec = fs.spec(vids[0])
            w |= {"backbone": spec.backbone, "views": len(spec.views),
                  "keyframes": sum(len(fs.timestamps(v)) for v in vids),
                  "map_shape": list(fs.group(vids[0])[spec.views[0]].shape[1:])}
        n = w["keyframes"] * w["views"]
        measured.setdefault(w["backbone"], {
            "backbone": w["backbone"], "map_shape": w["map_shape"],
            "dtypes": {d: {"group_bytes_per_keyframe": b / n}
                       for d, b in w["store_bytes"].items()}})
    for name, shape in AVA_SHAPE.items():
        src = measured.get(MEASURED_AS.get(name, name))
        if src is None:
            continue
        c = shape[0] if shape[0] is not None else src["map_shape"][0]
        values = c * shape[1] * shape[2]
        for dtype, m in src["dtypes"].items():
            # the view's bytes scale with its values; the rest of the group (int8: the
            # (C,) scales, timestamps) with its channels
            view = m.get("view_bytes_per_keyframe", m["group_bytes_per_keyframe"])
            per_value = view / math.prod(src["map_shape"])
            per_channel = (m["group_bytes_per_keyframe"] - view) / src["map_shape"][0]
            per_kf = per_value * values + per_channel * c
            for views in VIEWS:
                rows.append({"backbone": name, "map": [c, shape[1], shape[2]],
                             "measured_on": src["backbone"],
                             "measured_map": src["map_shape"], "dtype": dtype,
                             "views": views, "bytes_per_value": per_value,
                             "bytes_per_channel": per_channel,
                             "bytes_per_keyframe_view": per_kf,
                             "ava_gb": per_kf * views * AVA_KEYFRAMES / 1e9})
    return {"keyframes": AVA_KEYFRAMES, "rows": rows, "extraction": gpu_budget()}


GPU_TFLOPS = 40.0     # assumed sustained TFLOP/s of one GPU on a 3D-conv backbone (fp16)


def gpu_budget(views: int = 1) -> dict:
    """Extraction GPU-hours on AVA per measured backbone, from FLOPs: counted here
    (torch's FlopCounterMode) on a small clip and scaled by voxels (convolutions are linear
    in T x H x W) to the backbone's clip at AVA's 480 x 480 canvas, at an assumed
    :data:`GPU_TFLOPS`.  The CPU's own rate (bench/results/extract_<backbone>.json) gives
    the same in CPU-hours, for scale."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.backbones import build_backbone

    out = {}
    for r in extract_results().values():
        net, bb, _ = build_backbone(r["backbone"], None, random_init=True, seed=0)
        small = (8, 64, 64)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            net(torch.zeros(1, 3, *small))
        per_voxel = fc.get_total_flops() / math.prod(small)
        ava = (bb.clip_frames, 480, 480)
        measured = (r["input"][1], r["input"][2], r["input"][3])
        flops_ava = per_voxel * math.prod(ava)
        cpu_flops_s = per_voxel * math.prod(measured) * r["full_clips_per_s"]
        out[r["backbone"]] = {
            "clip": list(ava), "gflop_per_clip": flops_ava / 1e9,
            "assumed_gpu_tflops": GPU_TFLOPS,
            "gpu_clips_per_s": GPU_TFLOPS * 1e12 / flops_ava,
            "gpu_hours_ava": AVA_KEYFRAMES * views * flops_ava / (GPU_TFLOPS * 1e12) / 3600,
            "cpu_measured_gflop_s": cpu_flops_s / 1e9,
            "cpu_hours_ava": AVA_KEYFRAMES * views * flops_ava / cpu_flops_s / 3600,
            "measured_input": list(measured), "measured_clips_per_s": r["full_clips_per_s"]}
    return out


def table(result: dict) -> str:
    lines = ["| backbone | map (C x H x W) | dtype | bytes/keyframe/view | 1 view | 6 views |",
             "|---|---|---|---|---|---|"]
    by = {}
    for r in result["rows"]:
        if r["dtype"] not in ("float16", "int8"):      # measured alternatives: JSON only
            continue
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
    w.add_argument("--params", default=str(ROOT / "stages.yaml"))
    w.add_argument("--data", type=Path, default=ROOT / "data",
                   help="a world made with --params: synth/, detections.parquet, "
                        "features.zarr (float16), e.g. `dvc repro`'s data/")
    w.add_argument("--work", type=Path, default=Path("/tmp/acar_store_world"))
    w.add_argument("--heads", nargs="+",
                   default=["linear", "acar", "acfb", "lfb", "acrn", "actor_actor"],
                   help="in this order (acfb needs acar before it)")
    sub.add_parser("project")
    t = sub.add_parser("temporal")
    t.add_argument("--params", default=str(ROOT / "stages.yaml"))
    t.add_argument("--data", type=Path, default=ROOT / "data")
    t.add_argument("--work", type=Path, default=Path("/tmp/acar_store_temporal"))
    t.add_argument("--videos", type=int, default=60)
    t.add_argument("--bins", nargs="+", default=["mean", "1", "2", "4"])
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.cmd == "world":
        result = world(args.params, args.data, args.work, args.heads,
                       RESULTS / "store_world.json")
        print("float16\n" + result["table_float16"] + "\nint8\n" + result["table_int8"])
        print(f"max |int8 - float16| = {result['max_abs_diff_points']} AP points")
    elif args.cmd == "temporal":
        result = temporal(args.params, args.data, args.work, args.videos, args.bins)
        (RESULTS / "store_temporal.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    else:
        result = project()
        (RESULTS / "store.json").write_text(json.dumps(result, indent=1) + "\n")
        print(table(result))


if __name__ == "__main__":
    main()
