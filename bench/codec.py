"""Decode cost of one keyframe's map under the codecs numcodecs offers (issue 21, target 4).

Why: from disk, the linear head at C = 2304 spends about 2.3 ms more CPU per keyframe than
from memory (``bench/results/train_2304.json``), the zstd decode of the store's chunks.
This times each codec's decode of the same map alone, one thread, so the README can say what
another codec would buy and cost in bytes.

    uv run python bench/codec.py                      # 2304 x 16 x 22, ReLU'd Gaussian
    uv run python bench/codec.py --channels 512 --size 16 --width 16

Writes bench/results/codec.json.  The map is synthetic (half zeros, random mantissas): a
learned backbone's maps compress better, so the stored fractions are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numcodecs
import numpy as np
from numcodecs import LZ4, Blosc, Zstd

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "codec.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=2304)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--width", type=int, default=22)
    ap.add_argument("--repeat", type=int, default=5, help="best of this many rounds")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    numcodecs.blosc.set_nthreads(1)
    rng = np.random.default_rng(0)
    shape = (args.channels, args.size, args.width)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float16)   # (C, H, W)
    raw = x.tobytes()
    codecs = {"zstd level 0 (the store's)": Zstd(level=0), "zstd level 1": Zstd(level=1),
              "lz4": LZ4(), "blosc lz4 shuffle": Blosc("lz4", 5, Blosc.SHUFFLE),
              "blosc zstd shuffle": Blosc("zstd", 1, Blosc.SHUFFLE)}
    rows = {}
    for name, codec in codecs.items():
        enc = codec.encode(raw)
        out = np.empty_like(x)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.process_time()
            for _ in range(20):
                codec.decode(enc, out=out)
            best = min(best, (time.process_time() - t0) / 20)
        assert np.array_equal(out, x), name
        rows[name] = {"stored_fraction": round(len(enc) / len(raw), 3),
                      "decode_cpu_ms_per_keyframe": round(best * 1e3, 2)}
        print(f"{name:28s} stored {rows[name]['stored_fraction']:.3f} of float16, "
              f"decode {rows[name]['decode_cpu_ms_per_keyframe']:.2f} ms CPU per keyframe")
    # the int8 store (extract.dtype int8): per-channel scale, half the bytes to decode
    scale = np.abs(x.astype(np.float32)).max(axis=(1, 2), keepdims=True) / 127
    q = np.round(x / np.where(scale == 0, 1, scale)).astype(np.int8)
    enc = Zstd(level=0).encode(q.tobytes())
    out8 = np.empty_like(q)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.process_time()
        for _ in range(20):
            Zstd(level=0).decode(enc, out=out8)
        best = min(best, (time.process_time() - t0) / 20)
    rows["int8 + zstd level 0"] = {"stored_fraction": round(len(enc) / len(raw), 3),
                                   "decode_cpu_ms_per_keyframe": round(best * 1e3, 2)}
    print(f"{'int8 + zstd level 0':28s} stored {rows['int8 + zstd level 0']['stored_fraction']:.3f}"
          f" of float16, decode {best * 1e3:.2f} ms CPU per keyframe")
    result = {"map": list(shape), "dtype": "float16", "raw_bytes": len(raw),
              "threads": 1, "loadavg_1m": round(os.getloadavg()[0], 2), "codecs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
