"""The canvas: a learned backbone's map near the padding, against the unpadded clip.

The official ACAR-Net code runs one clip unpadded (its batch pads to the largest clip; at
evaluation a batch is one clip).  ``acar extract`` pads each frame right and bottom to its
canvas: each side up to a multiple of ``pad_multiple``, by default the backbone's stride
(``per-side``, features.LAYOUT 3); before, to a square whose side was a multiple of 32.
For each clip of ``../shared/videos`` and a few keyframes, the same decoded, resized and
normalised clip (the stage's own functions) goes through the backbone

* ``unpadded``: the resized frame as it is, as the official code does (the reference);
* ``stage``: ``pipeline.extract.run`` itself with its default ``pad_multiple`` (1, i.e.
  unpadded, for i3d and SlowFast since the default changed; the stride for the others),
  stored as float32 (so storage rounding plays no part);
* ``stride``: the bare forward on the stride canvas (the stage must equal it);
* ``square``: the bare forward on the old square canvas (its side a multiple of the old
  default, the smallest multiple of the stride from 32 on: 32, hoghof 40),

and each map inside the image is compared with the reference (and the stage's with the
square one: how far the change moved the features), per cell: max over channels of
|a - ref| / max over channels of |ref| (the measure of closing2.md's 1.37 / 0.26 / 0.003),
grouped by the cell's distance, in cells, from the image's right or bottom edge, whichever
is nearer (0: the last column and the last row of the map), whether or not the canvas pads
that side.  The map's shape is the reference's,
ceil(h / stride) x ceil(w / stride); the square canvas's extra cells are dropped.
``hoghof`` floors a partial cell when it is not told where the image ends, so its unpadded
map lacks the last partial column or row and its edge cells' context differs: for hoghof the
test is ``stage_vs_square`` (0: its features inside the image do not depend on the canvas).

    uv run python bench/canvas.py                          # i3d + hoghof, short side 160
    uv run python bench/canvas.py --backbones slowfast_r50 --frames 32 --stamps 1 7 \
        --out bench/results/canvas_slowfast.json

``i3d``'s TensorFlow "SAME" padding puts its windows by the input's size: an odd size at
stride 4 (284 / 4 = 71) pads 1 px before the next pooling where an even one (288 / 4 = 72)
pads none, so an unpadded 284-px-wide clip is sampled on a grid shifted by 4 input pixels
from a 288-px one, in every cell.  I3D was trained on 224-px crops, a multiple of 32, whose
sizes stay even down to stride 16, as on the stride canvas.  PyTorch's symmetric padding
(SlowFast, the torchvision ResNets) has no such shift: there an unpadded clip and the stride
canvas differ only where the receptive field reaches the padding.  No SlowFast weights are
offline, so ``slowfast_r50`` runs on seeded random weights whose batch norms get random
statistics and affine terms (always, for a ``slowfast*`` backbone: a fresh random init's
batch norm maps a zero input to zero, which would hide the padding), saved in ACAR-Net's
layout and passed to the stage as a weights file.

Writes bench/results/canvas.json (``--out``).  One torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import extract
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureStore
from pipeline.backbones import build_backbone, feature_stride
from pipeline.video import Video

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "videos"
CLIPS = ("armwrestling", "basketball", "hug_1080p", "pedestrians")
STAMPS = (1, 4, 7)                     # keyframes (s) inside each clip


def clips_of(video: Video, stamps: list[int], frames: int) -> list[np.ndarray]:
    """The stage's clips (native rate, stride 1) of ``stamps``: (T, H0, W0, 3) uint8 each."""
    return [video.read(extract.clip_indices(float(t), video.info, frames, 1)) for t in stamps]


def forward(net, bb, clip: np.ndarray, short_side: int, canvas: str, pad: int
            ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(C, H', W') map of one clip on ``canvas`` (unpadded | stride | square), seconds, and
    the input's (W, H)."""
    h0, w0 = clip.shape[1:3]
    w, h, stride_canvas = extract.view_geometry(w0, h0, short_side, pad)
    old = pad * math.ceil(32 / pad)            # the old default: the stride's multiple >= 32
    side = math.ceil(max(w, h) / old) * old
    size = {"unpadded": (w, h), "stride": stride_canvas, "square": (side, side)}[canvas]
    x = extract.resize_frames(torch.from_numpy(clip).permute(0, 3, 1, 2), (w, h))
    x = extract.normalise_clips(x[None], bb.mean, bb.std, False, size)        # (1, 3, T, H, W)
    start = time.perf_counter()
    with torch.inference_mode():
        fmap = net(x, image=(h, w)) if bb.sees_image else net(x)
        fmap = fmap.float().mean(dim=2)[0].numpy()                            # (C, H', W')
    return fmap, time.perf_counter() - start, size


def stage_maps(backbone: str, weights: str | None, path: Path, stamps: list[int],
               frames: int, short_side: int, tmp: Path) -> tuple[np.ndarray, dict, float]:
    """The stage's stored float32 maps (K, C, H', W'), its view, and its seconds."""
    videos = tmp / "videos"
    videos.mkdir(exist_ok=True)
    (videos / path.name).symlink_to(path.resolve())
    dets = tmp / "d.parquet"
    write_detections(pd.DataFrame({"video_id": path.stem, "timestamp": stamps, "x1": 0.1,
                                   "y1": 0.1, "x2": 0.5, "y2": 0.9, "score": 0.9}), dets, {})
    cfg = extract.ExtractConfig(backbone=backbone, weights=weights, clip_frames=frames,
                                clip_stride=1, clip_fps=None, short_side=short_side,
                                batch_size=1, num_workers=0, device="cpu", dtype="float32")
    url = str(tmp / "f.zarr")
    start = time.perf_counter()
    assert extract.run(cfg, videos, dets, url) == []
    seconds = time.perf_counter() - start
    store = FeatureStore(url)
    view = store.view(path.stem, f"s{short_side}")
    return store.read(path.stem, view.name).astype(np.float32), view.to_dict(), seconds


def compare(a: np.ndarray, ref: np.ndarray, w: int, h: int, stride: int) -> dict:
    """``a`` against ``ref`` (K, C, rows, cols), per cell, by distance from the padded edge."""
    rows, cols = ref.shape[-2:]
    a = a[..., :rows, :cols]
    rel = np.abs(a - ref).max(axis=1) / (np.abs(ref).max(axis=1) + 1e-6)       # (K, rows, cols)
    dist = np.minimum((math.ceil(w / stride) - 1 - np.arange(cols))[None, :],
                      (math.ceil(h / stride) - 1 - np.arange(rows))[:, None])  # (rows, cols)
    by = {}
    for d in np.unique(dist):
        cells = rel[:, dist == d]
        by[str(int(d))] = {"max": float(cells.max()), "median": float(np.median(cells)),
                           "cells": int((dist == d).sum())}
    return {"max_rel_diff_per_cell": float(rel.max()),
            "median_rel_diff_per_cell": float(np.median(rel)),
            "max_abs_diff_over_max_abs": float(np.abs(a - ref).max() / np.abs(ref).max()),
            "by_cells_from_padded_edge": by}


def random_bn_weights(backbone: str, out: Path, seed: int = 0) -> Path:
    """A SlowFast of seeded random weights whose batch norms have random running statistics
    and affine terms, saved in ACAR-Net's ``.pth.tar`` layout at ``out``."""
    from pipeline.backbones import slowfast

    net, _, _ = build_backbone(backbone, random_init=True, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            n = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.3 * torch.randn(n, generator=gen))
    torch.save({"state_dict": slowfast.official_state_dict(net, slowfast.ACAR)}, out)
    return out


def measure(backbone: str, weights: str | None, path: Path, frames: int, short_side: int,
            stamps: tuple[int, ...] = STAMPS) -> dict:
    video = Video(path)
    stamps = [t for t in stamps if t < video.info.duration - 0.5]
    net, bb, identity = build_backbone(backbone, weights)
    stride = feature_stride(bb)
    pad = extract.default_pad_multiple(extract.ExtractConfig(backbone=backbone))  # the stage's
    clips = clips_of(video, stamps, frames)
    maps: dict[str, list[np.ndarray]] = {"unpadded": [], "stride": [], "square": []}
    seconds: dict[str, float] = {k: 0.0 for k in maps}
    sizes = {}
    for clip in clips:
        for canvas in maps:
            fmap, s, sizes[canvas] = forward(net, bb, clip, short_side, canvas, stride)
            maps[canvas].append(fmap)
            seconds[canvas] += s
    with tempfile.TemporaryDirectory() as tmp:
        stage, view, stage_s = stage_maps(backbone, weights, path, stamps, frames, short_side,
                                          Path(tmp))
    ref = np.stack(maps["unpadded"])
    rows, cols = stage.shape[-2:]
    w, h = view["valid"][2:]
    out = {"backbone": backbone, "weights": identity, "stride": stride, "pad_multiple": pad,
           "video": path.name, "frame": [video.width, video.height], "keyframes": stamps,
           "clip_frames": frames, "short_side": short_side, "image": [w, h],
           "inputs": {k: list(v) for k, v in sizes.items()},
           "stage_view": view, "maps": {k: list(np.stack(v).shape[-2:]) for k, v in maps.items()},
           "forward_s_per_clip": {k: v / len(clips) for k, v in seconds.items()},
           "stage_s": stage_s}
    # the cells the stage's map covers: the stride canvas's, padded or not (pad_multiple 1)
    assert tuple(view["input_size"]) == tuple(sizes["stride"]), (view, sizes)
    out["stage_vs_unpadded"] = compare(stage, ref, w, h, stride)
    out["stride_bare_vs_unpadded"] = compare(np.stack(maps["stride"]), ref, w, h, stride)
    out["square_vs_unpadded"] = compare(np.stack(maps["square"]), ref, w, h, stride)
    out["stage_vs_stride_bare"] = compare(stage, np.stack(maps["stride"]), w, h, stride)
    out["stage_vs_square"] = compare(stage, np.stack(maps["square"])[..., :rows, :cols], w, h,
                                     stride)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["i3d", "hoghof"])
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--frames", type=int, default=16, help="i3d's clip (its own: 64)")
    ap.add_argument("--short-side", type=int, default=160)
    ap.add_argument("--stamps", type=int, nargs="+", default=list(STAMPS),
                    help="keyframes (s) of each clip")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "canvas.json")
    args = ap.parse_args()
    missing = [c for c in args.clips if not (SHARED / f"{c}.mp4").is_file()]
    if missing:
        print(f"skipped: no {', '.join(missing)} in {SHARED}")
        return
    torch.set_num_threads(args.threads)
    results = []
    scratch = tempfile.TemporaryDirectory()
    for backbone in args.backbones:
        frames = 8 if backbone == "hoghof" else args.frames
        weights = None
        if backbone.startswith("slowfast"):
            weights = str(random_bn_weights(backbone, Path(scratch.name) / f"{backbone}.pth.tar"))
        for clip in args.clips:
            r = measure(backbone, weights, SHARED / f"{clip}.mp4", frames, args.short_side,
                        tuple(args.stamps))
            if weights is not None:
                r["weights"] = "random-init(seed=0), random batch-norm statistics"
            results.append(r)
            print(json.dumps({k: r[k] for k in ("backbone", "video", "inputs", "maps")}),
                  json.dumps({k: r[k]["by_cells_from_padded_edge"] for k in
                              ("stage_vs_unpadded", "square_vs_unpadded")}), flush=True)
    scratch.cleanup()
    out = {"threads": args.threads, "cpu_count": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0], "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
