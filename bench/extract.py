"""Throughput of ``acar extract`` against the bare backbone, and bytes per keyframe.

Runs the whole stage (``pipeline.extract.run``: decoding workers, resizing, batching,
forward, Zarr writes) on one video with one keyframe per second, then the bare backbone
forward (plus the mean over time) on pre-made tensors of the same shapes, batches and
torch threads.  Reports clips/s of both, their ratio (target >= 0.85), and the bytes per
keyframe of the default view in the store, as float16 and as int8 (the same maps written
again by the stage's writer; with int8's error), and where the time goes per clip (decode +
resize in one process, the writes).  Writes bench/results/extract.json.

    uv run python bench/extract.py            # r2plus1d_18, S=256, random init, CPU
    uv run python bench/extract.py --backbone i3d --weights kinetics400 --clip-frames 32 \
        --clip-stride 1 --short-side 224 --video ../shared/videos/armwrestling.mp4

The backbone is randomly initialised (seeded) unless ``--weights`` names its weights: the
speed does not depend on the weights, the store's compressed size does a little.

``--padding A B`` measures instead how much the map inside the image (cells
[0, ceil(h / stride)) x [0, ceil(w / stride))) of one clip at 1 s changes between two
``pad_multiple`` values: max |a - b| / max |a| overall, and the largest per-cell
relative difference in each column of cells (the right edge is where a 16:9 image
meets its padding).  Writes bench/results/extract_padding.json.

    uv run python bench/extract.py --padding 16 64 --video ../shared/videos/hug_1080p.mp4 \
        --short-side 112
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from pipeline import extract
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureStore
from pipeline.backbones import build_backbone, get_backbone
from pipeline.video import Video

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "videos" / "pedestrians.mp4"


def bare_forward(cfg: extract.ExtractConfig, video: Video, clips: int) -> float:
    """Seconds for the backbone alone on ``clips`` clips in the stage's batches."""
    net, bb, _ = build_backbone(cfg.backbone, cfg.weights, random_init=cfg.random_init,
                                seed=cfg.seed)
    _, _, (cw, ch) = extract.view_geometry(video.width, video.height, cfg.short_side,
                                           cfg.pad_multiple or extract.default_pad_multiple(cfg))
    t = cfg.clip_frames or bb.clip_frames
    sizes = [min(cfg.batch_size, clips - s) for s in range(0, clips, cfg.batch_size)]
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, t, ch, cw, generator=gen) for b in set(sizes)}
    with torch.inference_mode():
        net(inputs[sizes[-1]])                          # warm-up, as the stage's first batch
        start = time.perf_counter()
        for b in sizes:
            net(inputs[b]).mean(dim=2).half().numpy()
        return time.perf_counter() - start


def full_stage(cfg: extract.ExtractConfig, video_path: Path, stamps: list[int], tmp: Path
               ) -> tuple[float, Path]:
    videos = tmp / "videos"
    videos.mkdir(exist_ok=True)
    link = videos / video_path.name
    if not link.exists():
        os.symlink(video_path.resolve(), link)
    dets = tmp / "det.parquet"
    write_detections(pd.DataFrame({"video_id": video_path.stem, "timestamp": stamps,
                                   "x1": 0.1, "y1": 0.1, "x2": 0.5, "y2": 0.9, "score": 0.9}),
                     dets, {"source": "bench"})
    store = tmp / "features.zarr"
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    failures = extract.run(cfg, videos, dets, str(store))
    elapsed = time.perf_counter() - start
    assert not failures, failures
    return elapsed, store


def store_bytes(store: Path, video: str, view: str) -> dict:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

    fs = FeatureStore(str(store))
    k = len(fs.timestamps(video))
    arr = fs.root[video][view]
    raw = int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
    return {"keyframes": k, "map_shape": list(arr.shape[1:]), "dtype": str(arr.dtype),
            "view_bytes_per_keyframe": size(store / video / view) / k,
            "group_bytes_per_keyframe": size(store / video) / k,
            "uncompressed_bytes_per_keyframe": raw}


COMPARED = ("float16", "int8")    # the stored dtypes compared (float32 is 2x float16)


def dtype_sizes(store: Path, video: str, view: str, tmp: Path) -> dict:
    """The stage's float16 maps written again as float16 and as int8 (the stage's own
    writer, ``FeatureStore.write_rows``, in its batches): stored bytes per keyframe of each,
    the seconds the writes took, and int8's error against float16."""
    src = FeatureStore(str(store))
    maps = src.read(video, view)                                   # (K, C, H, W) float16
    out: dict = {}
    for dtype in COMPARED:
        url = tmp / f"{dtype}.zarr"
        fs = FeatureStore(str(url), mode="a")
        fs.begin_video(video, src.timestamps(video), src.attrs(video))
        arr = fs.create_view(video, src.view(video, view), maps.shape, dtype)
        start = time.perf_counter()
        for k in range(0, len(maps), 2):
            fs.write_rows(video, arr, k, maps[k:k + 2])
        write_s = time.perf_counter() - start
        fs.finish_video(video)
        sizes = store_bytes(url, video, view)
        back = FeatureStore(str(url)).read(video, view).astype(np.float32)
        ref = maps.astype(np.float32)
        err = back - ref
        out[dtype] = {**sizes, "write_s_per_keyframe": write_s / len(maps),
                      "rel_rms_error": float(np.sqrt((err ** 2).mean() / (ref ** 2).mean())),
                      "max_abs_error_over_max_abs": float(np.abs(err).max()
                                                          / np.abs(ref).max())}
    out["uint8_affine (measured, not an option)"] = affine_uint8(maps, tmp / "affine.zarr")
    f16, i8 = (out[d]["group_bytes_per_keyframe"] for d in COMPARED)
    return {"dtypes": out, "int8_fewer_bytes": f16 / i8,
            "zero_fraction": float((maps == 0).mean()), "min_value": float(maps.min())}


def affine_uint8(maps: np.ndarray, url: Path) -> dict:
    """The alternative scheme: uint8 with a float16 offset and scale per (keyframe,
    channel), ``x ~ lo + q * scale``, 255 steps over [min, max] (symmetric int8 spends
    one bit on the sign of post-ReLU maps).  Stored in the same layout, for its bytes."""
    x = maps.astype(np.float32)
    flat = x.reshape(*x.shape[:2], -1)
    lo = flat.min(axis=2).astype(np.float16)
    scale = ((flat.max(axis=2) - lo.astype(np.float32)) / 255).astype(np.float16)
    s = np.where(scale > 0, scale.astype(np.float32), 1)[..., None]
    q = np.clip(np.rint((flat - lo.astype(np.float32)[..., None]) / s), 0, 255)
    q = q.astype(np.uint8)
    back = (lo.astype(np.float32)[..., None] + q * scale.astype(np.float32)[..., None])
    grp = zarr.open_group(str(url), mode="w", zarr_format=3)
    for name, a in (("q", q.reshape(x.shape)), ("lo", lo), ("scale", scale)):
        grp.create_array(name, shape=a.shape, chunks=(1, *a.shape[1:]), shards=a.shape,
                         dtype=a.dtype, fill_value=0)[:] = a
    size = sum(f.stat().st_size for f in url.rglob("*") if f.is_file())
    err = back - flat
    return {"group_bytes_per_keyframe": size / len(maps),
            "rel_rms_error": float(np.sqrt((err ** 2).mean() / (flat ** 2).mean())),
            "max_abs_error_over_max_abs": float(np.abs(err).max() / np.abs(flat).max())}


def decode_seconds(cfg: extract.ExtractConfig, video_path: Path, stamps: list[int]) -> float:
    """Seconds the stage's decoding workers spend (decode + resize) on these keyframes, run
    here in one process: the CPU time that competes with the forward on a loaded machine."""
    bb = get_backbone(cfg.backbone)
    frames, stride = cfg.clip_frames or bb.clip_frames, cfg.clip_stride or bb.clip_stride
    times = np.asarray(stamps, np.float64)
    segs = [extract._Segment(video_path.stem, video_path, times, a,
                             min(a + cfg.segment_keyframes, len(times)))
            for a in range(0, len(times), cfg.segment_keyframes)]
    cfg = extract.ExtractConfig(**{**cfg.__dict__, "pad_multiple": cfg.pad_multiple
                                   or extract.default_pad_multiple(cfg)})
    start = time.perf_counter()
    for _ in extract._SegmentFrames(segs, cfg, frames, stride, [cfg.short_side]):
        pass
    return time.perf_counter() - start


def padding_difference(cfg: extract.ExtractConfig, video: Video, pads: list[int]) -> dict:
    """The map inside the image of the clip at 1 s with two paddings: how far apart."""
    net, bb, _ = build_backbone(cfg.backbone, random_init=True, seed=cfg.seed)
    frames, stride = cfg.clip_frames or bb.clip_frames, bb.stride
    idx = extract.clip_indices(1.0, video.info, frames, cfg.clip_stride or bb.clip_stride)
    clip = video.read(idx)                                               # (T, H0, W0, 3)
    maps = []
    for pad in pads:
        x, _, (_, _, w, h) = extract.preprocess(clip, cfg.short_side, False, pad, bb.mean,
                                                bb.std)
        with torch.inference_mode():
            fmap = net(x[None], image=(h, w)) if bb.sees_image else net(x[None])
        maps.append(fmap.mean(dim=2)[0].numpy())                         # (C, H', W')
    rows, cols = math.ceil(h / stride), math.ceil(w / stride)
    a, b = (m[:, :rows, :cols] for m in maps)
    diff = np.abs(a - b)
    per_cell = diff.max(0) / np.abs(a).max(0).clip(1e-6)                # (rows, cols)
    return {"backbone": cfg.backbone, "image": [w, h], "cells": [rows, cols],
            "pad_multiple": pads, "canvases": [m.shape[-1] * stride for m in maps],
            "max_rel_diff": float(diff.max() / np.abs(a).max()),
            "mean_rel_diff": float(diff.mean() / np.abs(a).mean()),
            "per_column_max_rel_diff": [float(v) for v in per_cell.max(0)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--backbone", default="r2plus1d_18")
    ap.add_argument("--weights", default=None,
                    help="the backbone's weights (e.g. kinetics400 for i3d); default: random")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--clip-frames", type=int, default=8)
    ap.add_argument("--clip-stride", type=int, default=2)
    ap.add_argument("--keyframes", type=int, default=12, help="one per second from 1 s")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=2, help="bare forward runs (median)")
    ap.add_argument("--padding", type=int, nargs=2, metavar=("A", "B"),
                    help="compare the map inside the image with these two pad_multiple")
    ap.add_argument("--out", type=Path, default=None,
                    help="default bench/results/extract.json (extract_padding.json)")
    args = ap.parse_args()
    if not args.video.exists():
        raise SystemExit(f"{args.video}: not found (pass --video)")
    torch.set_num_threads(args.threads)
    video = Video(args.video)
    results = ROOT / "bench" / "results"
    if args.padding:
        cfg = extract.ExtractConfig(backbone=args.backbone, clip_frames=args.clip_frames,
                                    clip_stride=args.clip_stride, short_side=args.short_side)
        result = padding_difference(cfg, video, args.padding)
        out = args.out or results / "extract_padding.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    stamps = [t for t in range(1, args.keyframes + 1) if t < video.info.duration]
    cfg = extract.ExtractConfig(backbone=args.backbone, weights=args.weights,
                                random_init=args.weights is None,
                                clip_frames=args.clip_frames, clip_stride=args.clip_stride,
                                short_side=args.short_side, batch_size=args.batch_size,
                                num_workers=args.workers, device="cpu")
    n = len(stamps)
    bare = [bare_forward(cfg, video, n)]
    name = extract.view_name(args.short_side, False)
    with tempfile.TemporaryDirectory() as tmp:
        full, store = full_stage(cfg, args.video, stamps, Path(tmp))
        sizes = store_bytes(store, args.video.stem, name)
        sizes.update(dtype_sizes(store, args.video.stem, name, Path(tmp)))
    decode = decode_seconds(cfg, args.video, stamps)
    bare += [bare_forward(cfg, video, n) for _ in range(args.repeats - 1)]
    bare_s = statistics.median(bare)
    w, h, (cw, ch) = extract.view_geometry(video.width, video.height, args.short_side,
                                           extract.default_pad_multiple(cfg))
    result = {
        "video": str(args.video), "frame_size": [video.width, video.height],
        "fps": video.fps, "backbone": args.backbone, "weights": args.weights or "random-init",
        "short_side": args.short_side,
        "input": [3, args.clip_frames, ch, cw], "clips": n, "batch_size": args.batch_size,
        "torch_threads": args.threads, "decode_workers": args.workers,
        "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
        "full_s": full, "full_clips_per_s": n / full,
        "bare_s": bare, "bare_clips_per_s": n / bare_s,
        "ratio": (n / full) / (n / bare_s),
        # where the rest goes, in seconds per clip (the workers' decode + resize run beside
        # the forward: on a machine with no idle core they take their CPU from it)
        "per_clip_s": {"full": full / n, "bare_forward": bare_s / n, "decode_resize": decode / n,
                       "write_float16": sizes["dtypes"]["float16"]["write_s_per_keyframe"],
                       "write_int8": sizes["dtypes"]["int8"]["write_s_per_keyframe"]},
        **sizes,
    }
    out = args.out or results / "extract.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio full/bare = {result['ratio']:.3f}; "
          f"{math.ceil(sizes['view_bytes_per_keyframe'])} bytes per keyframe on disk")


if __name__ == "__main__":
    main()
