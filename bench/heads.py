"""CPU benchmark of the heads: parameter count and forward time per keyframe.

Config: in_channels 512, context 16x16 (ResNet-18 res5 at 256 px, stride 16), 80 classes,
a batch of 8 keyframes with 3 actors each, default hparams, eval mode, no grad, 1 thread;
median of ``--runs`` timed forwards after one warm-up.  Writes bench/results/heads.json.

    uv run python bench/heads.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from pipeline.models import build_head

CONFIGS = {  # label -> (head, hparams)
    "linear": ("linear", {}),
    "actor_actor": ("actor_actor", {}),
    "acrn": ("acrn", {}),
    "acar (nl)": ("acar", {"hr2o": "nl"}),
    "acar (avg)": ("acar", {"hr2o": "avg"}),
    "acar (rn)": ("acar", {"hr2o": "rn"}),
    "acar (gattn)": ("acar", {"hr2o": "gattn"}),
}


def make_batch(keyframes: int, actors: int, channels: int, size: int):
    g = torch.Generator().manual_seed(0)
    context = torch.randn(keyframes, channels, size, size, generator=g)
    n = keyframes * actors
    xy1 = torch.rand(n, 2, generator=g) * size / 2
    wh = 1 + torch.rand(n, 2, generator=g) * (size / 2 - 1)
    b = torch.arange(keyframes).repeat_interleave(actors)[:, None].float()
    return context, torch.cat([b, xy1, xy1 + wh], dim=1)


def bench(name: str, hparams: dict, context, rois, num_classes: int, runs: int) -> dict:
    torch.manual_seed(0)
    head = build_head(name, context.shape[1], num_classes, **hparams).eval()
    times = []
    with torch.no_grad():
        head(context, rois)  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            head(context, rois)
            times.append(time.perf_counter() - t)
    return {
        "head": name,
        "hparams": hparams,
        "config": dataclasses.asdict(head.config),   # hparams over the head's defaults
        "params": sum(p.numel() for p in head.parameters()),
        "ms_per_keyframe": 1000 * statistics.median(times) / len(context),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--keyframes", type=int, default=8)
    ap.add_argument("--actors", type=int, default=3)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "heads.json")
    args = ap.parse_args()

    torch.set_num_threads(1)
    context, rois = make_batch(args.keyframes, args.actors, args.channels, args.size)
    results = {
        "setup": {"in_channels": args.channels, "H": args.size, "W": args.size,
                  "keyframes": args.keyframes, "actors_per_keyframe": args.actors,
                  "num_classes": args.classes, "runs": args.runs, "threads": 1,
                  "torch": torch.__version__},
        "heads": {label: bench(name, hp, context, rois, args.classes, args.runs)
                  for label, (name, hp) in CONFIGS.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"\n{'head':<14}{'params':>12}{'ms/keyframe':>14}")
    for label, r in results["heads"].items():
        print(f"{label:<14}{r['params']:>12,}{r['ms_per_keyframe']:>14.2f}")


if __name__ == "__main__":
    main()
