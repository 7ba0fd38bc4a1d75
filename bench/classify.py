"""The classify table of the README: ``acar classify`` (official preprocessing) on the shared
clips, every keyframe; prints a markdown table (clip, top-1 per keyframe, probability).

    uv run python bench/classify.py [--videos ../shared/videos] [--backbone i3d] [--json OUT]

Cost on CPU: one 64x224x224 I3D forward per keyframe (~8 s on 2 free cores).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from pipeline import classify
from pipeline.video import open_video

CLIPS = ("armwrestling.mp4", "basketball.mp4", "hug_1080p.mp4", "pedestrians.mp4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=Path,
                    default=Path(__file__).resolve().parents[1].parent / "shared" / "videos")
    ap.add_argument("--backbone", default="i3d")
    ap.add_argument("--json", type=Path, help="write every clip's results here")
    ap.add_argument("--max-keyframes", type=int, default=12,
                    help="a longer clip gets every k-th second (k = ceil(n / max))")
    args = ap.parse_args()
    results: dict[str, list[dict]] = {}
    rows = ["| clip | keyframe (s) | top-1 | p |", "|---|---|---|---|"]
    for name in CLIPS:
        times = classify.keyframe_times(open_video(args.videos / name).info.duration)
        times = times[::math.ceil(len(times) / args.max_keyframes)]
        cfg = classify.ClassifyConfig(backbone=args.backbone, times=tuple(times))
        t0 = time.perf_counter()
        out = results[name] = classify.run(args.videos / name, cfg)
        sec = (time.perf_counter() - t0) / max(len(out), 1)
        print(f"{name}: {len(out)} keyframes, {sec:.1f} s each", flush=True)
        for r in out:
            label, p = r["top5"][0]
            rows.append(f"| {name} | {r['t']:g} | {label} | {p:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
