"""acar's SlowFast against the official code: ACAR-Net's ``slowfast.py`` and PySlowFast.

Nothing of either project is in acar; this script runs them from scratch checkouts (never
committed) in a throwaway environment.  How the scratch run was made (CPU)::

    git clone https://github.com/Siyu-C/ACAR-Net /tmp/ref/ACAR             # plain torch
    git clone https://github.com/facebookresearch/SlowFast /tmp/ref/SlowFast
    uv venv /tmp/sfenv --python .venv/bin/python    # + a .pth naming .venv's site-packages
    uv pip install --python /tmp/sfenv iopath fvcore simplejson             # (for torch)
    # PySlowFast imports detectron2 and pytorchvideo at module level, for layers this
    # check never runs; a folder of stubs (STUBS below: detectron2.layers.ROIAlign =
    # torchvision's RoIAlign; pytorchvideo's distributed helpers for one process, its
    # NaiveSyncBatchNorm = BatchNorm, Swish, SoftTargetCrossEntropyLoss) goes on PYTHONPATH.
    python bench/slowfast_reference.py --acar /tmp/ref/ACAR --slowfast /tmp/ref/SlowFast \
        --python /tmp/sfenv/bin/python --stubs /tmp/ref/stubs [--store]

The official side (``--official OUT``, run by the script itself in that environment):

* ACAR-Net: ``slowfast50(alpha=4, beta=0.125, fuse_only_conv=False, fuse_kernel_size=7,
  slow_full_span=True)`` (configs/AVA/SLOWFAST_R50_ACAR_HR2O.yaml) and ``slowfast101(alpha=4,
  beta=0.125)`` (its R101 config: lateral convs alone, kernel 5, every 4th frame), weights
  saved as its ``pretrained/`` files are (``torch.save`` of the backbone's state dict);
  ``Tensor.cuda`` is made a no-op (its ``slow_full_span`` indexes on the GPU).
* PySlowFast: ``configs/Kinetics/SLOWFAST_8x8_R50.yaml`` with the AVA res5
  (``SPATIAL_STRIDES [[1,1],[2,2],[2,2],[1,1]]``, ``SPATIAL_DILATIONS [..., [2,2]]``), built
  by ``build_model`` and saved by ``slowfast.utils.checkpoint.save_checkpoint`` (a
  ``.pyth``); its input packed by ``slowfast.datasets.utils.pack_pathway_output``; the map
  read from ``s5``'s output by a forward hook.

Weights: every tensor of the official state dict is drawn from a generator seeded by its
official name (:func:`synthetic_tensor`; conv kernels He-scaled, batch norms near 1), so the
suite (``tests/backbones/test_slowfast.py``) rebuilds the same files from the stored key
list without the official code.  The map compared is the temporal mean of each pathway's
res5 output, concatenated (Slow first): ``max |acar - official| / max |official|``.

``--store`` writes ``tests/fixtures/slowfast_reference.npz`` (the official maps on the small
input) and ``tests/fixtures/slowfast_keys.json`` (the official key names and shapes).
Measured: see ``bench/results/slowfast_reference.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# name -> (format, depth); the acar registry entry whose Slow sampling it uses
CASES = {"acar_r50": ("acar-net", 50, "slowfast_r50"),
         "pyslowfast_r50": ("pyslowfast", 50, "slowfast_r50"),
         "acar_r101": ("acar-net", 101, "slowfast_r101")}
SMALL = (8, 32, 48)                    # the suite's input (T, H, W)
LARGE = (32, 64, 64)                   # the measurement's (ACAR-Net's 32-frame clip)
SIZES = {"small": SMALL, "large": LARGE,
         "16x8": (64, 32, 32)}         # the 16x8 clip: 64 frames, Slow sees 16


def synthetic_input(t: int, h: int, w: int) -> np.ndarray:
    """(1, 3, t, h, w) float32 in [-1, 1] (tests/backbones/test_slowfast.py has the same)."""
    cc, tt, yy, xx = np.meshgrid(np.arange(3), np.arange(t), np.arange(h), np.arange(w),
                                 indexing="ij")
    x = np.sin(0.37 * tt + 0.11 * yy * (cc + 1) + 0.07 * xx + 1.3 * cc) \
        * np.cos(0.05 * (xx - yy) + 0.2 * tt)
    return x[None].astype(np.float32)


def synthetic_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A weight drawn from a generator seeded by its name (the test has the same)."""
    g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) >= 2:                                   # conv / linear kernels
        return torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
    if leaf == "weight":                                  # batch norm scale
        return 0.5 + 0.5 * torch.rand(shape, generator=g)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)          # bias, running_mean


def fill(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v if k.endswith("num_batches_tracked")
                else synthetic_tensor(k, tuple(v.shape))) for k, v in state.items()}


# ---- the official side (scratch environment) -----------------------------------------------

def run_official(acar_dir: str, slowfast_dir: str, out: Path, cases: list[str],
                 sizes: list[str]) -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self       # ACAR-Net's slow_full_span
    sys.path[:0] = [acar_dir, slowfast_dir]
    out.mkdir(parents=True, exist_ok=True)
    keys: dict[str, list] = {}
    maps: dict[str, np.ndarray] = {}
    for case in cases:
        fmt, depth, _ = CASES[case]
        if fmt == "acar-net":
            from models.backbones.slowfast import slowfast50, slowfast101
            if depth == 50:
                net = slowfast50(alpha=4, beta=0.125, fuse_only_conv=False,
                                 fuse_kernel_size=7, slow_full_span=True)
            else:
                net = slowfast101(alpha=4, beta=0.125)
            net.load_state_dict(fill(net.state_dict()))
            net.eval()
            torch.save(net.state_dict(), out / f"{case}.pth.tar")

            def forward(x, net=net):
                slow, fast = net(x)
                return torch.cat([slow.mean(2, keepdim=True), fast.mean(2, keepdim=True)], 1)
            state = net.state_dict()
        else:
            from slowfast.config.defaults import get_cfg
            from slowfast.datasets.utils import pack_pathway_output
            from slowfast.models import build_model
            from slowfast.utils.checkpoint import save_checkpoint
            cfg = get_cfg()
            cfg.merge_from_file(os.path.join(slowfast_dir, "configs", "Kinetics",
                                             "SLOWFAST_8x8_R50.yaml"))
            cfg.NUM_GPUS = 0
            cfg.RESNET.SPATIAL_STRIDES = [[1, 1], [2, 2], [2, 2], [1, 1]]
            cfg.RESNET.SPATIAL_DILATIONS = [[1, 1], [1, 1], [1, 1], [2, 2]]
            net = build_model(cfg)
            net.load_state_dict(fill(net.state_dict()))
            net.eval()
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            job = out / f"{case}_job"
            saved = save_checkpoint(str(job), net, opt, 0, cfg)
            os.replace(saved, out / f"{case}.pyth")
            net.head = torch.nn.Identity()      # its pool is sized for 8x224x224; s5 is read
            got: dict[str, list] = {}
            net.s5.register_forward_hook(lambda m, i, o, got=got: got.__setitem__("s5", o))

            def forward(x, net=net, cfg=cfg, got=got):
                packed = [p[None] for p in pack_pathway_output(cfg, x[0])]
                net(packed)
                slow, fast = got["s5"]
                return torch.cat([slow.mean(2, keepdim=True), fast.mean(2, keepdim=True)], 1)
            state = net.state_dict()
        keys[case] = [[k, list(v.shape)] for k, v in state.items()
                      if not k.endswith("num_batches_tracked")]
        with torch.no_grad():
            for size in sizes:
                x = torch.from_numpy(synthetic_input(*SIZES[size]))
                t0 = time.perf_counter()
                maps[f"{case}/{size}"] = forward(x).numpy()
                print(f"official {case} {size}: {tuple(maps[f'{case}/{size}'].shape)} "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    np.savez(out / "maps.npz", **maps)
    (out / "keys.json").write_text(json.dumps(keys))


# ---- whole ACAR-Net models (``--zoo``): backbone + neck + head, as its model zoo ---------

ZOO = {"zoo_r50_acar": ("slowfast50", dict(alpha=4, beta=0.125, fuse_only_conv=False,
                                           fuse_kernel_size=7, slow_full_span=True),
                        "acar", dict(width=2304, roi_spatial=7, num_classes=60, depth=2)),
       "zoo_r50_linear": ("slowfast50", dict(alpha=4, beta=0.125, fuse_only_conv=False,
                                             fuse_kernel_size=7, slow_full_span=True),
                          "linear", dict(width=2304, roi_spatial=7, num_classes=60)),
       "zoo_r101_acar": ("slowfast101", dict(alpha=4, beta=0.125), "acar",
                         dict(width=2304, roi_spatial=7, num_classes=60, depth=1,
                              mlp_1x1=True))}
BOXES = [[0.1, 0.1, 0.5, 0.9], [0.4, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]]
ZOO_SMALL = (8, 48, 48)                # the suite's: a 3x3 map (the ACAR head's least)


class _Cfg(dict):
    """A dict with attribute access: what ACAR-Net's EasyDict configs give its models."""
    __getattr__ = dict.get


def run_official_zoo(acar_dir: str, inp: Path, out: Path, cases: list[str]) -> None:
    """AVA_model (its eval path: ``forward(data, evaluate=True)``, then its pose-softmax
    activation) on the input clip and boxes; the model saved as ``main.py`` saves it."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path[:0] = [acar_dir]
    from losses import ava_pose_softmax_func
    from models import AVA_model
    clips = {k: torch.from_numpy(v) for k, v in np.load(inp).items()}
    scores = {}
    heads = {}
    for case in cases:
        arch, bkw, head, hkw = ZOO[case]
        cfg = _Cfg(backbone=_Cfg(arch=arch, kwargs=bkw), neck=_Cfg(type="basic", kwargs=_Cfg(
            num_classes=60, multi_class=True)), head=_Cfg(type=head, kwargs=hkw))
        net = AVA_model(cfg)
        net.load_state_dict(fill(net.state_dict()))
        net.eval()
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v              # DDP's names
                                               for k, v in net.state_dict().items()}},
                   out / f"{case}.pth.tar")
        heads[case] = [[k, list(v.shape)] for k, v in net.state_dict().items()
                       if k.startswith("head.")]
        for size, x in clips.items():
            data = {"clips": [x], "aug_info": [[{"crop_box": [0., 0., 1., 1.], "flip": False,
                                                  "pad_ratio": [1., 1.]}]],
                    "labels": [[{"bounding_box": b, "label": [0]} for b in BOXES]],
                    "filenames": ["clip"], "mid_times": [902]}
            with torch.no_grad():
                o = net(data, evaluate=True)
            scores[f"{case}/{size}"] = ava_pose_softmax_func(o["outputs"]).numpy()
            print(f"official {case} {size}: scores {scores[f'{case}/{size}'].shape}",
                  flush=True)
    np.savez(out / "zoo_scores.npz", **scores)
    (out / "zoo_heads.json").write_text(json.dumps(heads))


def ava_labelmap():
    """AVA's 60 evaluated classes (ids of ava_action_list_v2.2_for_activitynet_2019), names
    made up: only the ids and their order matter here (1-14: the pose classes)."""
    from pipeline.artifacts.labelmap import LabelMap
    ids = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29,
           30, 34, 36, 37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60,
           61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80)
    sup = tuple("pose" if i <= 14 else "object" if i <= 63 else "person" for i in ids)
    return LabelMap(ids=ids, names=tuple(f"class {i}" for i in ids), superclasses=sup)


def zoo_check(args, tmp: Path) -> dict:
    """acar import + acar's backbone and head against AVA_model's scores (python level)."""
    from pipeline.artifacts.checkpoint import load_checkpoint
    from pipeline.artifacts.labelmap import write_labelmap
    from pipeline.backbones import build_backbone
    from pipeline.import_ckpt import import_checkpoint
    from pipeline.inference import load_head
    from pipeline.losses import activate
    inputs = {"small": synthetic_input(*ZOO_SMALL), "large": synthetic_input(*LARGE)}
    np.savez(tmp / "zoo_input.npz", **inputs)
    env = dict(os.environ, PYTHONPATH=args.stubs)
    subprocess.run([args.python, __file__, "--official-zoo", str(tmp), "--acar", args.acar,
                    "--cases", *args.zoo], check=True, env=env, cwd=tmp)
    ref = dict(np.load(tmp / "zoo_scores.npz"))
    lm = ava_labelmap()
    write_labelmap(lm, tmp / "ava60.pbtxt")
    results = {}
    for case in args.zoo:
        zoo = tmp / f"{case}.pth.tar"
        rec = import_checkpoint(zoo, tmp / case, tmp / "ava60.pbtxt")
        ckpt = load_checkpoint(tmp / case / "head.pt")
        head = load_head(ckpt)
        net, _, _ = build_backbone(ckpt["feature_spec"]["backbone"], str(zoo))
        results[case] = {"head": rec["head"], "hparams": rec["hparams"], "boxes": BOXES}
        for size, x in inputs.items():
            with torch.no_grad():
                context = net(torch.from_numpy(x)).mean(dim=2)        # (1, 2304, h, w)
                h, w = context.shape[-2:]
                b = torch.tensor(BOXES) * torch.tensor([w, h, w, h])
                rois = torch.cat([torch.zeros(len(b), 1), b], 1)      # feature-map cells
                probs = activate(head(context, rois), lm.pose_indices).numpy()
            r = ref[f"{case}/{size}"]
            results[case][size] = {"input": list(x.shape[2:]),
                                   "scores_rel_error": rel_error(probs, r),
                                   "scores_abs_max_error": float(np.abs(probs - r).max())}
        print(case, json.dumps(results[case]), flush=True)
    if args.store:
        fx = ROOT / "tests" / "fixtures"
        npz, kj = fx / "acar_import_reference.npz", fx / "acar_import_heads.json"
        old_maps = dict(np.load(npz)) if npz.is_file() else {}
        old_keys = json.loads(kj.read_text()) if kj.is_file() else {}
        heads = json.loads((tmp / "zoo_heads.json").read_text())
        np.savez_compressed(npz, **{**old_maps, **{c: ref[f"{c}/small"] for c in args.zoo}})
        kj.write_text(json.dumps({**old_keys, **heads}, separators=(",", ":")) + "\n")
    return results


def cli_check(args, tmp: Path) -> dict:
    """``acar extract`` -> ``acar import`` -> ``acar eval`` on a video against AVA_model on
    the same decoded frames (acar's decoder and clip sampling give the official side its
    input: the comparison is of the models, not of the two data pipelines)."""
    import pandas as pd

    from pipeline.artifacts.annotations import write_annotations
    from pipeline.artifacts.detections import write_detections
    from pipeline.artifacts.labelmap import write_labelmap
    from pipeline.artifacts.predictions import read_predictions
    from pipeline.backbones import get_backbone
    from pipeline.extract import clip_indices, normalise_clips
    from pipeline.video import open_video, read_frames, video_info, write_video
    side, ts = 64, 2                        # a 64x64 video: no resize, no padding
    (tmp / "videos").mkdir()
    yy, xx = np.mgrid[:side, :side]
    frames = [np.stack([(128 + 100 * np.sin(0.2 * xx + 0.3 * t + c) * np.cos(0.15 * yy - 0.1 * t))
                        .astype(np.uint8) for c in range(3)], -1) for t in range(120)]
    video = tmp / "videos" / "clip.mp4"
    write_video(frames, video, 30, lossless=True)
    info = video_info(video)
    bb = get_backbone("slowfast_r50")
    idx = clip_indices(float(ts), info, bb.clip_frames, bb.clip_stride, 30.0)
    clip = torch.from_numpy(read_frames(open_video(video), idx))     # (T, H, W, 3) uint8
    x = normalise_clips(clip.permute(0, 3, 1, 2)[None], bb.mean, bb.std, False, side)
    np.savez(tmp / "zoo_input.npz", video=x.numpy())
    env = dict(os.environ, PYTHONPATH=args.stubs)
    cases = [c for c in args.zoo if ZOO[c][0] == "slowfast50"]
    subprocess.run([args.python, __file__, "--official-zoo", str(tmp), "--acar", args.acar,
                    "--cases", *cases], check=True, env=env, cwd=tmp)
    ref = dict(np.load(tmp / "zoo_scores.npz"))
    lm = ava_labelmap()
    write_labelmap(lm, tmp / "ava60.pbtxt")
    dets = pd.DataFrame({"video_id": ["clip"] * 3, "timestamp": [ts] * 3,
                         **{k: [b[i] for b in BOXES] for i, k in enumerate(("x1", "y1", "x2",
                                                                            "y2"))},
                         "score": [1.0] * 3})
    write_detections(dets, tmp / "dets.parquet", {"source": "bench"})
    gt = dets.drop(columns="score").assign(action_id=1, person_id=range(3))
    write_annotations(gt, tmp / "gt.csv")
    acar = [str(Path(sys.executable).parent / "acar")]
    results = {}
    for case in cases:                # each file is its own weights identity: its own store
        zoo = tmp / f"{case}.pth.tar"
        store = str(tmp / f"{case}.zarr")
        subprocess.run([*acar, "extract", "--videos", str(tmp / "videos"), "--detections",
                        str(tmp / "dets.parquet"), "--out", store, "--backbone",
                        "slowfast_r50", "--weights", str(zoo), "--short-side", str(side),
                        "--clip-frames", "32", "--clip-stride", "2", "--clip-fps", "30",
                        "--time-offset", "0", "--batch-size", "1", "--num-workers", "0",
                        "--dtype", args.dtype],
                       check=True, cwd=tmp)             # cwd: no stages.yaml defaults
        subprocess.run([*acar, "import", str(zoo), "--out", str(tmp / case), "--labelmap",
                        str(tmp / "ava60.pbtxt"), "--short-side", str(side)], check=True,
                       cwd=tmp)
        subprocess.run([*acar, "eval", "--model", str(tmp / case / "head.pt"), "--features",
                        store, "--detections", str(tmp / "dets.parquet"),
                        "--annotations", str(tmp / "gt.csv"), "--labelmap",
                        str(tmp / "ava60.pbtxt"), "--out", str(tmp / f"{case}.json"),
                        "--predictions-out", str(tmp / f"{case}.csv")], check=True, cwd=tmp)
        pred = read_predictions(tmp / f"{case}.csv")
        got = np.zeros((3, 60), np.float64)
        col = {a: i for i, a in enumerate(lm.ids)}
        for row in pred.itertuples():
            box = int(np.argmin([abs(row.x1 - b[0]) + abs(row.y1 - b[1]) + abs(row.x2 - b[2])
                                 + abs(row.y2 - b[3]) for b in BOXES]))
            got[box, col[int(row.action_id)]] = row.score
        r = ref[f"{case}/video"]
        results[case] = {"scores_rel_error": rel_error(got, r),
                         "scores_abs_max_error": float(np.abs(got - r).max()),
                         "rows": len(pred)}
        # the same head on float32 features, and on them rounded as the store keeps them
        from pipeline.artifacts.checkpoint import load_checkpoint
        from pipeline.backbones import build_backbone
        from pipeline.inference import load_head
        from pipeline.losses import activate
        head = load_head(load_checkpoint(tmp / case / "head.pt"))
        net, _, _ = build_backbone("slowfast_r50", str(zoo))
        with torch.no_grad():
            context = net(x).mean(dim=2)                              # (1, 2304, 4, 4)
            h, w = context.shape[-2:]
            rois = torch.cat([torch.zeros(3, 1),
                              torch.tensor(BOXES) * torch.tensor([w, h, w, h])], 1)
            for name, c in (("float32", context), ("float16", context.half().float())):
                p = activate(head(c, rois), lm.pose_indices).numpy()
                results[case][f"python_{name}_features_rel_error"] = rel_error(p, r)
        print(case, json.dumps(results[case]), flush=True)
    return results


# ---- acar's side ---------------------------------------------------------------------------

def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--acar", help="a checkout of Siyu-C/ACAR-Net")
    ap.add_argument("--slowfast", help="a checkout of facebookresearch/SlowFast")
    ap.add_argument("--python", default=sys.executable, help="the scratch environment's")
    ap.add_argument("--stubs", default="", help="a folder of import stubs (see above)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=[*CASES, *ZOO])
    ap.add_argument("--sizes", nargs="+", default=["small", "large"], choices=list(SIZES))
    ap.add_argument("--store", action="store_true", help="write the suite's fixture (small)")
    ap.add_argument("--zoo", nargs="*", default=None, choices=list(ZOO),
                    help="check `acar import` on whole ACAR-Net models instead")
    ap.add_argument("--dtype", default="float32", choices=["float16", "int8", "float32"],
                    help="--cli: the feature store's dtype (float16 rounds the maps to ~5e-4)")
    ap.add_argument("--cli", action="store_true",
                    help="with --zoo: the whole CLI path (extract, import, eval) on a video")
    ap.add_argument("--official", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--official-zoo", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.official:
        run_official(args.acar, args.slowfast, Path(args.official), args.cases, args.sizes)
        return
    if args.official_zoo:
        out = Path(args.official_zoo)
        run_official_zoo(args.acar, out / "zoo_input.npz", out, args.cases)
        return
    if args.store and args.zoo is None and "small" not in args.sizes:
        ap.error("--store keeps the small input's maps: include it in --sizes")
    sys.path.insert(0, str(ROOT))
    if args.zoo is not None:
        with tempfile.TemporaryDirectory() as tmp:
            if args.cli:
                key = "cli" if args.dtype == "float16" else f"cli_{args.dtype}"
                results = {key: {"store_dtype": args.dtype, **cli_check(args, Path(tmp))}}
            else:
                results = zoo_check(args, Path(tmp))
        out = ROOT / "bench" / "results" / "acar_import_reference.json"
        old = json.loads(out.read_text()) if out.is_file() else {}
        out.write_text(json.dumps({**old, **results}, indent=1) + "\n")
        return
    from pipeline.backbones import build_backbone
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (args.stubs,) if p))
        subprocess.run([args.python, __file__, "--official", tmp, "--acar", args.acar,
                        "--slowfast", args.slowfast, "--cases", *args.cases,
                        "--sizes", *args.sizes],
                       check=True, env=env, cwd=tmp)
        maps = dict(np.load(Path(tmp) / "maps.npz"))
        keys = json.loads((Path(tmp) / "keys.json").read_text())
        results: dict[str, dict] = {}
        for case in args.cases:
            fmt, depth, name = CASES[case]
            path = Path(tmp) / (f"{case}.pth.tar" if fmt == "acar-net" else f"{case}.pyth")
            net, _, identity = build_backbone(name, str(path))
            results[case] = {"format": fmt, "file": path.name, "identity": identity}
            with torch.no_grad():
                for size, shape in ((k, SIZES[k]) for k in args.sizes):
                    t0 = time.perf_counter()
                    ours = net(torch.from_numpy(synthetic_input(*shape))).numpy()
                    ref = maps[f"{case}/{size}"]
                    assert ours.shape == ref.shape, (ours.shape, ref.shape)
                    results[case][size] = {"input": list(shape), "map": list(ref.shape),
                                           "rel_error": rel_error(ours, ref),
                                           "ref_abs_max": float(np.abs(ref).max()),
                                           "acar_s": round(time.perf_counter() - t0, 2)}
            print(case, json.dumps(results[case]), flush=True)
    out = ROOT / "bench" / "results" / "slowfast_reference.json"     # cases run now replace
    old = json.loads(out.read_text()) if out.is_file() else {}          # theirs, others stay
    for case, res in results.items():
        old[case] = {**old.get(case, {}), **res}
    out.write_text(json.dumps(old, indent=1) + "\n")
    if args.store:
        fx = ROOT / "tests" / "fixtures"
        fx.mkdir(exist_ok=True)
        npz, kj = fx / "slowfast_reference.npz", fx / "slowfast_keys.json"
        old_maps = dict(np.load(npz)) if npz.is_file() else {}
        old_keys = json.loads(kj.read_text()) if kj.is_file() else {}
        np.savez_compressed(npz, **{**old_maps,
                                    **{c: maps[f"{c}/small"] for c in args.cases}})
        kj.write_text(json.dumps({**old_keys, **{c: keys[c] for c in args.cases}},
                                 separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
