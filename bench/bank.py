"""CPU benchmark of the bank stage: bytes per keyframe and build time per keyframe.

Builds a synthetic feature store (random float16 maps: ``--videos`` x ``--keyframes``,
``--channels`` x ``--size`` x ``--size``, ``--actors`` detections per keyframe), then the
lfb bank and the acfb bank at every ``--pool`` from a randomly initialised acar
checkpoint (default dims: reduce_dim 1024, hidden_dim 512, as in ACAR-Net), with
``acar bank``'s own code (:func:`pipeline.bank.run`), 1 thread.  Reports per bank: raw
bytes per keyframe (data + index arrays, uncompressed), stored bytes (Zarr, zstd),
build seconds per keyframe, reader seconds per keyframe (``BankReader.gather`` of a
window, in memory), and the raw size extrapolated to AVA v2.2 train+val (299 videos x 897
keyframes at 1 s, with ``--actors`` actors each).  Writes bench/results/bank.json.

    uv run python bench/bank.py                       # SlowFast-R50-like: 2304 ch, 16x16
    uv run python bench/bank.py --channels 512 --size 8 --hidden-dim 64 --reduce-dim 128

``--lengths 10 60 300``: training cost per keyframe of the two bank heads (``lfb``, window
30 s; ``acfb``, window 10 s) on one video of each length (1 keyframe/s): a fixed number of
training steps (``BankReader.gather`` with the training rng, the head's forward and
backward, the optimiser step) on keyframes spread over the video, with the bank and the
features in memory and on disk.  Past the window (21 s for acfb, 61 s for lfb) the cost of
a keyframe must not grow with its video's length.  Writes bench/results/bank_lengths.json.

    nice -n 5 uv run python bench/bank.py --lengths 10 60 300 --channels 256 --size 8 \
        --reduce-dim 128 --hidden-dim 64
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import bank
from pipeline.artifacts.banks import BankStore
from pipeline.artifacts.checkpoint import save_checkpoint
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureSpec, FeatureStore, ViewSpec
from pipeline.bank_reader import BankReader
from pipeline.keyframes import FeatureCache, Keyframe
from pipeline.keyframes import batch as kbatch
from pipeline.models import BankRequest, build_head

AVA_KEYFRAMES = 299 * 897            # AVA v2.2 train (235) + val (64) videos, 15 min at 1 s


def make_inputs(root: Path, videos: int, keyframes: int, channels: int, size: int, actors: int,
                reduce_dim: int, hidden_dim: int) -> tuple[str, Path, Path]:
    rng = np.random.default_rng(0)
    spec = FeatureSpec("bench", "random", True, 32, 2, 16 * size, channels, ("s",))
    store = FeatureStore(str(root / "f.zarr"), mode="a")
    view = ViewSpec("s", 16 * size, False, (16 * size, 16 * size), (0, 0, 16 * size, 16 * size),
                    16.0)
    rows = []
    for v in range(videos):
        name = f"v{v:03d}"
        store.begin_video(name, np.arange(1, keyframes + 1), {**spec.to_dict(),
                                                              "frame_size": [256, 256], "fps": 30})
        arr = store.create_view(name, view, (keyframes, channels, size, size))
        arr[:] = rng.standard_normal(arr.shape).astype(np.float16)
        store.finish_video(name)
        for t in range(1, keyframes + 1):
            for a in range(actors):
                x = a / actors
                rows.append((name, t, x, 0.1, x + 0.9 / actors, 0.9, 0.95))
    dets = root / "d.parquet"
    write_detections(pd.DataFrame(rows, columns=["video_id", "timestamp", "x1", "y1", "x2",
                                                 "y2", "score"]), dets, {"source": "bench"})
    torch.manual_seed(0)
    hparams = {"reduce_dim": reduce_dim, "hidden_dim": hidden_dim}
    head = build_head("acar", channels, 80, **hparams)
    ckpt = root / "acar.pt"
    save_checkpoint({"head": "acar", "hparams": hparams, "in_channels": channels,
                     "num_classes": 80, "labelmap": {}, "state_dict": head.state_dict(),
                     "feature_spec": {**spec.to_dict(), "train_view": "s"}}, ckpt)
    return str(root / "f.zarr"), dets, ckpt


def bench_one(kind: str, pool: str, features: str, dets: Path, ckpt: Path, out: str,
              window: int, hidden_dim: int, channels: int) -> dict:
    cfg = bank.BankConfig(kind=kind, pool=pool)
    t0 = time.perf_counter()
    bank.run(cfg, features, dets, out, ckpt if kind == "acfb" else None)
    build = time.perf_counter() - t0
    size = BankStore(out).size()
    request = BankRequest(kind, window, None if kind == "acfb" else 5,
                          exclude_current=kind == "acfb",
                          dim=hidden_dim if kind == "acfb" else channels,
                          pool=pool if kind == "acfb" else None)
    reader = BankReader(out, request)
    videos = BankStore(out).videos()
    kfs = [Keyframe(v, t, t - 1, None) for v in videos
           for t in range(1, int(size["keyframes"] / len(videos)) + 1)]
    reader.gather(kfs[:1])                                  # load the videos once
    t0 = time.perf_counter()
    for s in range(0, len(kfs), 8):
        slots, _ = reader.gather(kfs[s:s + 8])
    read = time.perf_counter() - t0
    item = BankStore(out).read_video(videos[0]).data.shape[1:]
    return {"kind": kind, "pool": pool if kind == "acfb" else None, "item": list(item),
            "actors": size["actors"], "keyframes": size["keyframes"],
            "bytes_per_keyframe": size["bytes_per_keyframe"],
            "stored_bytes_per_keyframe": size["stored_bytes_per_keyframe"],
            "build_s_per_keyframe": build / size["keyframes"],
            "gather_ms_per_keyframe": 1000 * read / size["keyframes"],
            "ava_trainval_GB": size["bytes_per_keyframe"] * AVA_KEYFRAMES / 1e9}


def train_cost(head_name: str, features: str, bank_url: str, in_memory: bool,
               channels: int, hidden_dim: int, keyframes: int, steps: int, batch: int = 8
               ) -> dict:
    """Seconds per keyframe of ``steps`` training steps of ``batch`` keyframes spread over
    the video (the first ``steps * batch`` of a fixed permutation), gather timed apart."""
    hp = {"hidden_dim": hidden_dim}
    torch.manual_seed(0)
    head = build_head(head_name, channels, 80, **hp)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    store = FeatureStore(features)
    video = store.videos()[0]
    reader = BankReader(bank_url, head.bank_request, in_memory=in_memory)
    cache = FeatureCache(store, "s", in_memory=in_memory)
    cache.open([video])
    reader.video(video)                                    # opened once per run, as train
    order = np.random.default_rng(0).permutation(keyframes)
    n = min(steps * batch, keyframes)
    picks = [int(i) for i in order[:n]]
    boxes = np.array([[a / 3, 0.1, a / 3 + 0.3, 0.9] for a in range(3)], np.float32)
    kfs = [Keyframe(video, i + 1, i, boxes) for i in picks]
    warm = kfs[:batch]                                     # one untimed step first
    head(*kbatch(warm, cache)[:2], bank=reader.gather(warm, np.random.default_rng(0)),
         valid=kbatch(warm, cache)[2]).float().pow(2).mean().backward()
    gather = total = 0.0
    slots_seen = 0
    for s in range(0, n, batch):
        part = kfs[s:s + batch]
        t0 = time.perf_counter()
        ctx, rois, valid = kbatch(part, cache)
        t1 = time.perf_counter()
        bank = reader.gather(part, np.random.default_rng(s))
        t2 = time.perf_counter()
        logits = head(ctx, rois, bank=bank, valid=valid)
        loss = logits.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += time.perf_counter() - t0
        gather += t2 - t1
        slots_seen += int(bank[1].sum())
    return {"s_per_keyframe": total / n, "gather_ms_per_keyframe": 1000 * gather / n,
            "bank_slots_per_keyframe": slots_seen / n, "keyframes_timed": n}


def lengths(args: argparse.Namespace) -> None:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            root = Path(tmp) / f"L{length}"
            root.mkdir()
            features, dets, ckpt = make_inputs(root, 1, length, args.channels, args.size,
                                               args.actors, args.reduce_dim, args.hidden_dim)
            banks = {}
            for kind in ("lfb", "acfb"):
                banks[kind] = str(root / f"{kind}.zarr")
                bank.run(bank.BankConfig(kind=kind, pool="none"), features, dets, banks[kind],
                         ckpt if kind == "acfb" else None)
            for head_name in ("lfb", "acfb"):
                for in_memory in (True, False):
                    r = train_cost(head_name, features, banks[head_name], in_memory,
                                   args.channels, args.hidden_dim, length, args.steps)
                    row = {"video_s": length, "head": head_name,
                           "data": "memory" if in_memory else "disk", **r}
                    runs.append(row)
                    print(row, flush=True)
    result = {"setup": {"channels": args.channels, "H": args.size, "W": args.size,
                        "actors_per_keyframe": args.actors, "reduce_dim": args.reduce_dim,
                        "hidden_dim": args.hidden_dim, "threads": 1, "steps": args.steps,
                        "batch": 8, "load_avg_1min": os.getloadavg()[0]},
              "runs": runs}
    out = args.out if args.out.name != "bank.json" else args.out.with_name("bank_lengths.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'head':<6}{'data':<8}" + "".join(f"{f'{L} s':>12}" for L in args.lengths)
          + "   (ms per keyframe; gather ms)")
    for head_name in ("lfb", "acfb"):
        for data in ("memory", "disk"):
            cells = [next(r for r in runs if r["video_s"] == L and r["head"] == head_name
                          and r["data"] == data) for L in args.lengths]
            print(f"{head_name:<6}{data:<8}" + "".join(
                f"{1000 * c['s_per_keyframe']:>7.1f};{c['gather_ms_per_keyframe']:>4.1f}"
                for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--keyframes", type=int, default=15)
    ap.add_argument("--channels", type=int, default=2304)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--actors", type=int, default=3)
    ap.add_argument("--reduce-dim", type=int, default=1024)
    ap.add_argument("--hidden-dim", type=int, default=512)
    ap.add_argument("--window", type=int, default=10, help="acfb window (lfb: 30)")
    ap.add_argument("--pools", default="none,2x2,4x4")
    ap.add_argument("--lengths", type=int, nargs="+",
                    help="video lengths (s): time the bank heads' training per keyframe")
    ap.add_argument("--steps", type=int, default=6, help="--lengths: steps of 8 keyframes")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bank.json")
    args = ap.parse_args()

    torch.set_num_threads(1)
    if args.lengths:
        lengths(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        features, dets, ckpt = make_inputs(root, args.videos, args.keyframes, args.channels,
                                           args.size, args.actors, args.reduce_dim,
                                           args.hidden_dim)
        runs = [("lfb", "none")] + [("acfb", p) for p in args.pools.split(",")]
        banks = [bench_one(kind, pool, features, dets, ckpt, str(root / f"{kind}_{pool}.zarr"),
                           30 if kind == "lfb" else args.window, args.hidden_dim,
                           args.channels) for kind, pool in runs]
    results = {
        "setup": {"videos": args.videos, "keyframes_per_video": args.keyframes,
                  "channels": args.channels, "H": args.size, "W": args.size,
                  "actors_per_keyframe": args.actors, "reduce_dim": args.reduce_dim,
                  "hidden_dim": args.hidden_dim, "threads": 1, "torch": torch.__version__,
                  "ava_keyframes": AVA_KEYFRAMES},
        "banks": banks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"\n{'bank':<12}{'item':>16}{'B/keyframe':>13}{'stored':>11}{'build s/kf':>12}"
          f"{'gather ms/kf':>14}{'AVA GB':>9}")
    for r in banks:
        label = r["kind"] + (f" {r['pool']}" if r["pool"] else "")
        print(f"{label:<12}{'x'.join(map(str, r['item'])):>16}{r['bytes_per_keyframe']:>13,.0f}"
              f"{r['stored_bytes_per_keyframe']:>11,.0f}{r['build_s_per_keyframe']:>12.3f}"
              f"{r['gather_ms_per_keyframe']:>14.2f}{r['ava_trainval_GB']:>9.1f}")


if __name__ == "__main__":
    main()
