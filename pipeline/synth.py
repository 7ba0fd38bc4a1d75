"""Stage ``synth``: a small synthetic world with AVA-format labels (the default dataset).

Nothing can be downloaded on an offline machine, so the default pipeline makes its own
videos.  Each video shows 1–3 stick-like figures on a textured background.  Every
second, each figure has one pose (``stand``, ``sit`` or ``walk``, the mutually
exclusive pose classes) and may ``hold`` an object.  Labels are written at one
keyframe per second, exactly like AVA.

Outputs (``out_dir``)::

    videos/<video_id>.mp4      h264, ``fps`` frames per second
    train.csv, val.csv         AVA annotation CSVs
    labelmap.pbtxt             with acar's ``superclass`` extension
    excluded.csv               excluded (video_id, timestamp) of the val split
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .artifacts.annotations import write_annotations, write_excluded
from .artifacts.labelmap import LabelMap, write_labelmap
from .video import write_video

LABELMAP = LabelMap(ids=(1, 2, 3, 4), names=("stand", "sit", "walk", "hold"),
                    superclasses=("pose", "pose", "pose", "object"))
STAND, SIT, WALK, HOLD = LABELMAP.ids


@dataclass
class SynthConfig:
    seed: int = 0
    num_train: int = 6          # videos in the train split
    num_val: int = 3            # videos in the val split
    duration: int = 8           # seconds per video
    fps: int = 8
    width: int = 160
    height: int = 120
    max_people: int = 3


@dataclass
class Person:
    color: np.ndarray           # (3,) uint8
    x: float                    # centre x (pixels)
    y: float                    # feet y (pixels)
    scale: float                # height multiplier
    poses: list[int]            # pose per second
    holds: list[bool]           # holding an object, per second
    vx: float                   # walking speed (pixels per frame)


def _people(rng: np.random.Generator, cfg: SynthConfig) -> list[Person]:
    n = int(rng.integers(1, cfg.max_people + 1))
    slots = rng.permutation(np.linspace(0.15, 0.85, cfg.max_people))[:n]
    people = []
    for sx in slots:
        poses = [int(rng.choice([STAND, SIT, WALK]))]
        for _ in range(cfg.duration):
            poses.append(poses[-1] if rng.random() < 0.5 else int(rng.choice([STAND, SIT, WALK])))
        people.append(Person(
            color=rng.integers(60, 255, 3).astype(np.uint8),
            x=float(sx * cfg.width), y=float(rng.uniform(0.7, 0.95) * cfg.height),
            scale=float(rng.uniform(0.8, 1.2)), poses=poses,
            holds=[bool(rng.random() < 0.4) for _ in range(cfg.duration + 1)],
            vx=float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.6))))
    return people


def _box(p: Person, pose: int) -> tuple[float, float, float, float]:
    """Tight box (x1, y1, x2, y2) in pixels of a figure at its current state."""
    h = (40 if pose != SIT else 26) * p.scale
    w = (12 if pose != SIT else 18) * p.scale
    return p.x - w / 2, p.y - h, p.x + w / 2, p.y


def _draw(img: np.ndarray, p: Person, pose: int, hold: bool, frame: int) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in _box(p, pose))
    h, w = img.shape[:2]
    head = max(3, int(5 * p.scale))
    cx = (x1 + x2) // 2
    yy, xx = np.ogrid[:h, :w]
    img[(yy - (y1 + head)) ** 2 + (xx - cx) ** 2 <= head ** 2] = p.color
    torso_bottom = y1 + (y2 - y1) * (0.62 if pose != SIT else 0.75)
    img[max(y1 + 2 * head, 0):int(torso_bottom), max(cx - 3, 0):cx + 3] = p.color
    legs = int(torso_bottom)
    if pose == WALK:  # legs swing with the frame number
        swing = int(4 * p.scale * np.sin(frame * 1.3))
        for dx in (swing, -swing):
            img[legs:y2, max(cx + dx - 2, 0):max(cx + dx + 2, 0)] = p.color
    elif pose == SIT:  # a bent leg: horizontal thigh, then shin
        img[legs - 2:legs + 2, max(cx, 0):x2] = p.color
        img[legs:y2, max(x2 - 3, 0):x2] = p.color
    else:
        for dx in (-2, 2):
            img[legs:y2, max(cx + dx - 1, 0):max(cx + dx + 2, 0)] = p.color
    if hold:  # a yellow object at the hand, outside the body
        hx, hy = x2 + 1, int(y1 + (y2 - y1) * 0.45)
        img[max(hy - 3, 0):hy + 3, max(hx, 0):hx + 6] = (250, 220, 30)


def _render_video(rng: np.random.Generator, cfg: SynthConfig, video_id: str, path: Path
                  ) -> list[tuple]:
    people = _people(rng, cfg)
    base = rng.integers(0, 80, 3)
    grad = np.linspace(0, 1, cfg.height)[:, None, None] * rng.integers(0, 80, 3)
    texture = rng.integers(0, 25, (cfg.height, cfg.width, 1))
    background = np.clip(base + grad + texture, 0, 255).astype(np.uint8)
    rows: list[tuple] = []

    def frames():
        for f in range(cfg.duration * cfg.fps):
            sec = f / cfg.fps
            img = background.copy()
            for pid, p in enumerate(people):
                pose, hold = p.poses[int(sec)], p.holds[int(sec)]
                if pose == WALK:
                    p.x += p.vx
                    if not (8 < p.x < cfg.width - 8):
                        p.vx = -p.vx
                        p.x = float(np.clip(p.x, 8, cfg.width - 8))
                _draw(img, p, pose, hold, f)
                if f % cfg.fps == 0 and 0 < sec < cfg.duration:
                    x1, y1, x2, y2 = _box(p, pose)
                    box = (np.clip(x1 / cfg.width, 0, 1), np.clip(y1 / cfg.height, 0, 1),
                           np.clip(x2 / cfg.width, 0, 1), np.clip(y2 / cfg.height, 0, 1))
                    rows.append((video_id, int(sec), *box, pose, pid))
                    if hold:
                        rows.append((video_id, int(sec), *box, HOLD, pid))
            yield img

    write_video(frames(), path, cfg.fps)
    return rows


def run(cfg: SynthConfig, out_dir: str | os.PathLike) -> None:
    """Generate the world into ``out_dir`` (deterministic in ``cfg``)."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    splits = {"train": cfg.num_train, "val": cfg.num_val}
    cols = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id"]
    total = sum(splits.values())
    with tqdm(total=total, desc="synth", unit="video") as bar:
        for split, n in splits.items():
            rows = []
            for i in range(n):
                vid = f"{split}_{i:03d}"
                rows += _render_video(rng, cfg, vid, out / "videos" / f"{vid}.mp4")
                bar.update()
            write_annotations(pd.DataFrame(rows, columns=cols), out / f"{split}.csv")
    # One excluded keyframe in val, so the excluded-timestamps path is always exercised.
    write_excluded(pd.DataFrame({"video_id": ["val_000"], "timestamp": [cfg.duration - 1]}),
                   out / "excluded.csv")
    write_labelmap(LABELMAP, out / "labelmap.pbtxt")
