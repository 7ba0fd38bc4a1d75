"""``acar classify``: a backbone's own Kinetics-400 classifier on a video, one clip per second.

The quick way to see that a backbone and its weights are loaded right: for each keyframe
(every whole second from 0 s) it takes the clip the weights were tested with
(:class:`pipeline.backbones.ClassifierPreset`; I3D: 64 consecutive frames at the video's
own rate, centred on the keyframe and shifted to stay inside the video; short side 256,
centre crop 224, RGB in [-1, 1]) and reports the top-5 labels with their softmax
probabilities.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .artifacts import ArtifactError
from .backbones import Backbone, ClassifierPreset, build_classifier, get_backbone
from .extract import clip_indices, resize_frames
from .progress import progress as progress_bar
from .video import Video, open_video, read_frames


@dataclass(frozen=True)
class ClassifyConfig:
    backbone: str = "i3d"
    weights: str | None = None
    random_init: bool = False         # (for tests of the plumbing only)
    seed: int = 0
    frames: int | None = None         # None: the weights' official preprocessing
    short_side: int | None = None
    crop: int | None = None
    times: tuple[float, ...] | None = None    # keyframes (s); None: 0, 1, 2, ... s
    top: int = 5
    threads: int | None = None        # torch threads (None: torch's default)


def keyframe_times(duration: float) -> np.ndarray:
    """0, 1, 2, ... s: every whole second inside the video (at least one)."""
    return np.arange(max(1, math.ceil(duration)), dtype=np.float64)


def preset_of(cfg: ClassifyConfig, bb: Backbone) -> ClassifierPreset:
    assert bb.classifier is not None
    p = bb.classifier
    return replace(p, frames=cfg.frames or p.frames, short_side=cfg.short_side or p.short_side,
                   crop=cfg.crop or p.crop)


def clip_tensor(video: Video, t: float, bb: Backbone, preset: ClassifierPreset | None = None
                ) -> torch.Tensor:
    """The clip around ``t``: (3, T, crop, crop) float, normalised for ``bb``."""
    p = preset or bb.classifier
    assert p is not None
    idx = clip_indices(t, video.info, p.frames, p.frame_step, None)
    frames = read_frames(video, idx)                                    # (T, H0, W0, 3) uint8
    h0, w0 = frames.shape[1:3]
    r = p.short_side / min(h0, w0)
    w, h = max(p.crop, round(w0 * r)), max(p.crop, round(h0 * r))
    x = resize_frames(torch.from_numpy(frames).permute(0, 3, 1, 2), (w, h))  # (T, 3, h, w)
    top, left = (h - p.crop) // 2, (w - p.crop) // 2
    x = x[:, :, top:top + p.crop, left:left + p.crop].float().div_(255)
    mean = torch.tensor(bb.mean).view(1, 3, 1, 1)
    std = torch.tensor(bb.std).view(1, 3, 1, 1)
    return ((x - mean) / std).permute(1, 0, 2, 3).contiguous()          # (3, T, crop, crop)


def run(video_path: str | Path, cfg: ClassifyConfig, progress: bool = True
        ) -> list[dict]:
    """``[{"t": seconds, "top5": [[label, prob], ...]}, ...]``, one per keyframe."""
    bb = get_backbone(cfg.backbone)
    for flag, value in (("--top", cfg.top), ("--frames", cfg.frames),
                        ("--short-side", cfg.short_side), ("--crop", cfg.crop)):
        if value is not None and value < 1:    # 0 is no "default": it is refused
            raise ArtifactError(flag, f"must be >= 1, got {value}")
    path = Path(video_path)
    if not path.is_file():
        raise ArtifactError(path, "video file not found")
    video = open_video(path)                   # the cheap checks before the network loads
    times = (np.asarray(cfg.times, np.float64) if cfg.times is not None
             else keyframe_times(video.info.duration))
    outside = ~((times >= 0) & (times <= video.info.duration))              # NaN too
    if outside.any():
        raise ArtifactError("--times", f"{times[outside][0]} s is outside the video "
                                       f"(0 to {video.info.duration:.2f} s)")
    clf = build_classifier(cfg.backbone, cfg.weights, cfg.random_init, cfg.seed)
    preset = preset_of(cfg, bb)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out: list[dict] = []
    k = min(cfg.top, len(clf.labels))
    with torch.inference_mode():
        for t in progress_bar(times, desc="classify", unit="clip", file=sys.stderr,
                              disable=not progress, dynamic_ncols=True):
            x = clip_tensor(video, float(t), bb, preset)[None]          # (1, 3, T, S, S)
            probs = torch.softmax(clf.net(x).double(), dim=-1)[0]       # (K,)
            p, i = probs.topk(k)
            out.append({"t": float(t), "top5": [[clf.labels[j], float(q)]
                                                for q, j in zip(p.tolist(), i.tolist(),
                                                                strict=True)]})
    return out


def format_table(results: list[dict]) -> str:
    """One line per keyframe: time, then the labels with their probabilities."""
    return "\n".join(f"{r['t']:6.1f} s  " + "  ".join(f"{lab} ({p:.3f})" for lab, p in r["top5"])
                     for r in results)
