"""Does one temporal store serve the heads that need no time as a ``mean`` store would?

Those heads read the mean of a store's N time bins (``extract.temporal: N``).  This
extracts the same videos again with ``temporal: mean`` and compares, per channel group of
hoghof (HOG 0-9, HOF 10-20, colour 21-29), max |mean of the bins - mean map| against
max |mean map|.  Writes bench/results/temporal_mean<tag>.json.

    uv run python bench/temporal_mean.py --work /tmp/grow/tiny/seed0 --params P.yaml
    (--work: a bench/world.py seed directory whose features.zarr has time bins)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline import extract
from pipeline.artifacts.features import FeatureStore
from pipeline.config import load_config

GROUPS = {"hog": slice(0, 10), "hof": slice(10, 21), "colour": slice(21, 30)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    work = Path(args.work)
    mean_url = str(work / "features_mean.zarr")
    cfg = load_config(extract.ExtractConfig, "extract", args.params, {"temporal": "mean"})
    extract.run(cfg, work / "synth" / "videos", work / "detections.parquet", mean_url)
    binned, mean = FeatureStore(str(work / "features.zarr")), FeatureStore(mean_url)
    diff, ref = {g: 0.0 for g in GROUPS}, {g: 0.0 for g in GROUPS}
    view, bins = None, None
    for v in mean.videos():
        view = view or next(k for k in mean.group(v).keys() if k != "timestamps")
        x = binned.read(v, view).astype(np.float32)          # (K, C, N, H, W)
        y = mean.read(v, view).astype(np.float32)            # (K, C, H, W)
        bins = x.shape[2]
        d = np.abs(x.mean(2) - y)
        for g, sl in GROUPS.items():
            diff[g] = max(diff[g], float(d[:, sl].max()))
            ref[g] = max(ref[g], float(np.abs(y[:, sl]).max()))
    out = {"work": str(work), "bins": bins, "videos": len(mean.videos()),
           "max_abs_diff": diff, "max_abs_ref": ref}
    path = Path(__file__).parent / "results" / f"temporal_mean{args.tag}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
