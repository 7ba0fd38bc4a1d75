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

def run_official(acar_dir: str, slowfast_dir: str, out: Path, cases: list[str]) -> None:
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
            for size in ("small", "large"):
                x = torch.from_numpy(synthetic_input(*(SMALL if size == "small" else LARGE)))
                t0 = time.perf_counter()
                maps[f"{case}/{size}"] = forward(x).numpy()
                print(f"official {case} {size}: {tuple(maps[f'{case}/{size}'].shape)} "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    np.savez(out / "maps.npz", **maps)
    (out / "keys.json").write_text(json.dumps(keys))


# ---- acar's side ---------------------------------------------------------------------------

def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--acar", help="a checkout of Siyu-C/ACAR-Net")
    ap.add_argument("--slowfast", help="a checkout of facebookresearch/SlowFast")
    ap.add_argument("--python", default=sys.executable, help="the scratch environment's")
    ap.add_argument("--stubs", default="", help="a folder of import stubs (see above)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--store", action="store_true", help="write the suite's fixture")
    ap.add_argument("--official", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.official:
        run_official(args.acar, args.slowfast, Path(args.official), args.cases)
        return
    sys.path.insert(0, str(ROOT))
    from pipeline.backbones import build_backbone
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (args.stubs,) if p))
        subprocess.run([args.python, __file__, "--official", tmp, "--acar", args.acar,
                        "--slowfast", args.slowfast, "--cases", *args.cases],
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
                for size, shape in (("small", SMALL), ("large", LARGE)):
                    t0 = time.perf_counter()
                    ours = net(torch.from_numpy(synthetic_input(*shape))).numpy()
                    ref = maps[f"{case}/{size}"]
                    assert ours.shape == ref.shape, (ours.shape, ref.shape)
                    results[case][size] = {"input": list(shape), "map": list(ref.shape),
                                           "rel_error": rel_error(ours, ref),
                                           "ref_abs_max": float(np.abs(ref).max()),
                                           "acar_s": round(time.perf_counter() - t0, 2)}
            print(case, json.dumps(results[case]), flush=True)
    out = ROOT / "bench" / "results" / "slowfast_reference.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    if args.store:
        fx = ROOT / "tests" / "fixtures"
        fx.mkdir(exist_ok=True)
        np.savez_compressed(fx / "slowfast_reference.npz",
                            **{c: maps[f"{c}/small"] for c in args.cases})
        (fx / "slowfast_keys.json").write_text(json.dumps(
            {c: keys[c] for c in args.cases}, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
