"""Training throughput: keyframes/s for one epoch read from the Zarr store on disk
(prefetching DataLoader) versus the same epoch with features already in memory.

    uv run python bench/train.py [--keyframes 512] [--head linear] [--threads 2] [--repeat 3]
                                 [--features normal|relu] [--reader rows|zarr|both]
                                 [--zarr-config '{"async.concurrency": 64}']
    nice -n 5 uv run python bench/train.py --keyframes 4096 --channels 2304 --size 16 \
        --width 22 --features relu --repeat 2 --cold --one-fetch-thread --profile --threads 2 \
        --epoch-keyframes acar=128 --out bench/results/train_2304.json

``--reader``: how the disk epochs read a run of keyframes: ``rows``, the hand decoder of
:mod:`pipeline.keyframes` (``RowReader``), or ``zarr``, zarr's own ``array[start:stop]``;
``both`` times the two in the same run (issue #15: keep the faster); ``--zarr-config``
sets zarr's own options (``zarr.config``) for the ``zarr`` reads.  Each rate is the
best of ``--repeat`` epochs (the modes alternate), which damps the noise of a shared
machine; the load average is recorded, and each mode's process CPU time per keyframe
(which the load hardly changes: on a shared machine the ratio of CPU times says what the
disk costs).  ``--epoch-keyframes acar=128``: a slow head's epoch draws that many keyframes
from the whole store (reads spread over a store of the full size).  ``--profile``: the
reads, the collate and the step each alone.  Writes bench/results/train.json (after every
head).  Targets: disk / memory >= 0.8 (issue #4); >= 0.9 at C = 2304, 16 x 22, a store
of several GB (issue #21).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import keyframes, train  # noqa: E402
from pipeline.artifacts.features import FeatureSpec, FeatureStore, ViewSpec  # noqa: E402
from pipeline.keyframes import FeatureCache, Keyframe, TrainKeyframes  # noqa: E402
from pipeline.models import build_head  # noqa: E402

HPARAMS = {"linear": {}, "actor_actor": {},
           "acrn": {"hidden_dim": 256},
           "acar": {"reduce_dim": 512, "hidden_dim": 256}}


def make_store(url: str, keyframes: int, channels: int, size: int, features: str = "normal",
               per_video: int = 32, width: int | None = None, dtype: str = "float16"):
    rng = np.random.default_rng(0)
    spec = FeatureSpec("bench", "random", True, 32, 2, 256, channels, ("s256",))
    store = FeatureStore(url, mode="a")
    samples = []
    for v in range(keyframes // per_video):
        video = f"v{v:03d}"
        store.begin_video(video, np.arange(per_video), spec.to_dict())
        w = width or size
        vs = ViewSpec("s256", 256, False, (w * 16, size * 16), (0, 0, w * 16, size * 16), 16.0)
        arr = store.create_view(video, vs, (per_video, channels, size, w), dtype)
        for a in range(0, per_video, 8):        # bounded memory at realistic widths
            maps = rng.standard_normal((min(8, per_video - a), channels, size, w),
                                       dtype=np.float32)
            if features == "relu":              # a backbone's output: about half zeros
                maps = np.maximum(maps, 0)
            store.write_rows(video, arr, a, maps.astype(np.float16))
        store.finish_video(video)
        for k in range(per_video):
            n = int(rng.integers(1, 4))
            xy = rng.uniform(0, 0.6, (n, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (n, 2))], 1)
            labels = (rng.random((n, 60)) < 0.05).astype(np.float32)
            samples.append(Keyframe(video, k, k, boxes.astype(np.float32), labels))
    return FeatureStore(url), samples


def drop_page_cache() -> bool:
    """Drop the kernel's page cache (root only): the next disk epoch reads from the disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def epoch_rate(store, samples, head_name, in_memory, workers, cfg, reader="rows",
               cold: bool = False, fetch_threads: int | None = None) -> tuple[float, float]:
    """(keyframes/s, process CPU ms per keyframe) of one training epoch over ``samples``;
    ``fetch_threads``: the prefetcher's threads [train.Prefetcher's default]."""
    if cold and not drop_page_cache():
        raise SystemExit("--cold: cannot drop the page cache (needs root)")
    cache = FeatureCache(store, "s256", in_memory=in_memory)
    if reader == "zarr":                  # zarr's own reads: the array itself
        cache.reader = lambda arr: arr
    cache.open(sorted({k.video for k in samples}))  # as train.run: memory: loaded; disk: opened
    data = TrainKeyframes(samples, cache, cfg.jitter, cfg.seed)
    torch.manual_seed(0)
    head = build_head(head_name, store.spec(samples[0].video).channels, 60,
                      **HPARAMS.get(head_name, {}))
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loader = train.epoch_loader(data, 0, cfg, workers)
    if fetch_threads is not None and isinstance(loader, train.Prefetcher):
        loader.threads = fetch_threads
    actors = [sum(len(samples[i].boxes) for i in b) for b in train.global_batches(data, 0, cfg)]
    t0, c0 = time.perf_counter(), time.process_time()
    train.train_epoch(head, opt, loader, list(range(13)), cfg, 0, actors)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(samples) / wall, 1e3 * cpu / len(samples)


def profile(store, samples, head_name, cfg, step_keyframes: int = 128) -> dict:
    """Where an epoch's time goes, each part alone in this thread (wall and CPU ms per
    keyframe): the disk reads (file read + zstd decode into the batch), the same batches
    from memory, the collate (float16 -> float32, rois), and the training step alone on
    ``step_keyframes`` keyframes collated beforehand."""
    out = {}
    videos = sorted({k.video for k in samples})
    for mode, in_memory in (("memory", True), ("disk", False)):
        cache = FeatureCache(store, "s256", in_memory=in_memory)
        cache.open(videos)
        data = TrainKeyframes(samples, cache, cfg.jitter, cfg.seed)
        batches = train.global_batches(data, 0, cfg)
        read = collate = (0.0, 0.0)
        for b in batches:
            t, c = time.perf_counter(), time.thread_time()
            items = data.__getitems__(b)
            t1, c1 = time.perf_counter(), time.thread_time()
            keyframes.collate_train(items)
            t2, c2 = time.perf_counter(), time.thread_time()
            read = (read[0] + t1 - t, read[1] + c1 - c)
            collate = (collate[0] + t2 - t1, collate[1] + c2 - c1)
        n = len(samples)
        out[f"{mode}_read_ms_per_kf"] = {"wall": round(1e3 * read[0] / n, 3),
                                         "cpu": round(1e3 * read[1] / n, 3)}
        out[f"{mode}_collate_ms_per_kf"] = {"wall": round(1e3 * collate[0] / n, 3),
                                            "cpu": round(1e3 * collate[1] / n, 3)}
        del cache, data
    part = samples[:step_keyframes]
    cache = FeatureCache(store, "s256", in_memory=True)
    cache.open(sorted({k.video for k in part}))
    data = TrainKeyframes(part, cache, cfg.jitter, cfg.seed)
    ready = [data.collate(data.__getitems__(b)) for b in train.global_batches(data, 0, cfg)]
    torch.manual_seed(0)
    head = build_head(head_name, store.spec(part[0].video).channels, 60,
                      **HPARAMS.get(head_name, {}))
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    actors = [len(rois) for _, _, rois, _, _ in ready]
    t, c = time.perf_counter(), time.process_time()
    train.train_epoch(head, opt, ready, list(range(13)), cfg, 0, actors)
    out["step_ms_per_kf"] = {"wall": round(1e3 * (time.perf_counter() - t) / len(part), 3),
                             "cpu": round(1e3 * (time.process_time() - c) / len(part), 3),
                             "keyframes": len(part)}
    return out


def write_json(out: Path, results: dict) -> None:
    """Write ``results`` to ``out`` (temp file + rename), after every head."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", type=int, default=512, help="keyframes in the store")
    ap.add_argument("--epoch-keyframes", action="append", default=[], metavar="HEAD=N",
                    help="a head's epoch: N keyframes drawn (seeded) from the whole store, "
                         "for a slow head on a large store [every keyframe]")
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--size", type=int, default=16, help="map height (and width)")
    ap.add_argument("--width", type=int, default=None, help="map width  [--size]")
    ap.add_argument("--dtype", choices=["float16", "int8"], default="float16")
    ap.add_argument("--cold", action="store_true",
                    help="also time disk epochs after dropping the page cache (needs root)")
    ap.add_argument("--one-fetch-thread", action="store_true",
                    help="also time disk epochs prefetched by one thread (as before #21)")
    ap.add_argument("--profile", action="store_true",
                    help="also time the reads, the collate and the step each alone")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    ap.add_argument("--head", action="append", help="head(s) to time [linear, acar]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=train.TrainConfig.num_workers,
                    help="train.num_workers (0: a prefetching thread)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--features", choices=["normal", "relu"], default="normal",
                    help="stored maps: Gaussian noise (hardly compressible) or its ReLU "
                         "(half zeros, compresses like a backbone's output)")
    ap.add_argument("--repeat", type=int, default=3, help="epochs per mode; best is kept")
    ap.add_argument("--reader", choices=["rows", "zarr", "both"], default="rows",
                    help="disk reads: the hand shard decoder (rows) or zarr's array[a:b]")
    ap.add_argument("--zarr-config", default="{}",
                    help="JSON of zarr.config settings for the zarr reads, e.g. "
                         '\'{"async.concurrency": 64, "codec_pipeline.batch_size": 32}\'')
    args = ap.parse_args()
    zarr_config = json.loads(args.zarr_config)
    try:
        per_head = {h: int(n) for h, n in (e.split("=", 1) for e in args.epoch_keyframes)}
    except ValueError:
        raise SystemExit(f"--epoch-keyframes: expected HEAD=N, got {args.epoch_keyframes}"
                         ) from None
    torch.set_num_threads(args.threads)
    cfg = train.TrainConfig(batch_size=args.batch_size)
    results = {"keyframes": args.keyframes, "channels": args.channels, "map": args.size,
               "map_hw": [args.size, args.width or args.size], "dtype": args.dtype,
               "threads": args.threads, "workers": args.workers, "repeat": args.repeat,
               "batch_size": args.batch_size, "nice": os.nice(0),
               "features": args.features, "reader": args.reader,
               "zarr_config": zarr_config, "command": " ".join(sys.argv),
               "loadavg_before": [round(x, 2) for x in os.getloadavg()], "heads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, samples = make_store(f"{tmp}/f.zarr", args.keyframes, args.channels,
                                    args.size, args.features, width=args.width,
                                    dtype=args.dtype)
        results["store_write_s"] = round(time.perf_counter() - t0, 1)
        results["store_mib"] = round(sum(
            p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20, 1)
        readers = ["rows", "zarr"] if args.reader == "both" else [args.reader]
        for head in args.head or ["linear", "acar"]:
            drawn = samples
            if head in per_head and per_head[head] < len(samples):
                pick = np.random.default_rng(7).choice(len(samples), per_head[head],
                                                       replace=False)
                drawn = [samples[i] for i in sorted(pick)]
            loads = [round(os.getloadavg()[0], 2)]
            epoch_rate(store, drawn[:64], head, True, 0, cfg)          # warm-up
            disk = {r: (0.0, 0.0) for r in readers}
            mem, cold, one = (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)
            for _ in range(args.repeat):       # each mode's best epoch (rate, its CPU)
                for reader in readers:
                    with zarr.config.set(zarr_config if reader == "zarr" else {}):
                        disk[reader] = max(disk[reader], epoch_rate(
                            store, drawn, head, False, args.workers, cfg, reader))
                mem = max(mem, epoch_rate(store, drawn, head, True, 0, cfg))
                if args.one_fetch_thread:
                    one = max(one, epoch_rate(store, drawn, head, False, args.workers, cfg,
                                              fetch_threads=1))
                if args.cold:
                    cold = max(cold, epoch_rate(store, drawn, head, False, args.workers,
                                                cfg, cold=True))
                loads.append(round(os.getloadavg()[0], 2))
            row = {"epoch_keyframes": len(drawn), "memory_kf_per_s": round(mem[0], 1),
                   "memory_cpu_ms_per_kf": round(mem[1], 2)}
            for reader, (rate, cpu) in disk.items():
                suffix = "" if len(readers) == 1 else f"_{reader}"
                row |= {f"disk{suffix}_kf_per_s": round(rate, 1),
                        f"disk{suffix}_cpu_ms_per_kf": round(cpu, 2),
                        f"ratio{suffix}": round(rate / mem[0], 3)}
            if args.one_fetch_thread:
                row |= {"disk_one_fetch_thread_kf_per_s": round(one[0], 1),
                        "disk_one_fetch_thread_cpu_ms_per_kf": round(one[1], 2),
                        "ratio_one_fetch_thread": round(one[0] / mem[0], 3)}
            if args.cold:
                row |= {"disk_cold_kf_per_s": round(cold[0], 1),
                        "disk_cold_cpu_ms_per_kf": round(cold[1], 2),
                        "ratio_cold": round(cold[0] / mem[0], 3)}
            row["loadavg_1min"] = loads
            if args.profile:
                row["profile"] = profile(store, drawn[:512], head, cfg)
            results["heads"][head] = row
            print(head, json.dumps(row), flush=True)
            write_json(args.out, results)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
