"""Stage-free rendering: draw AVA predictions (and optionally GT) over their videos.

Each keyframe's boxes and top actions are drawn on the frames within half a second of
it (the clip that the keyframe's label describes), so they are carried over to the
frames in between.  Text is sized from the frame height, so it stays readable from
240p to 1080p; each class has a stable colour.  The output is an h264 mp4 without
audio (PyAV).  ``acar viz`` and ``acar demo`` both use :func:`render_video`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .artifacts.labelmap import LabelMap
from .progress import progress
from .video import open_video, write_video

# tab10 + tab20b-like palette: a class keeps its colour in every video and run.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
           (57, 59, 121), (99, 121, 57), (140, 109, 49), (132, 60, 57), (123, 65, 115),
           (82, 84, 163), (140, 162, 82), (189, 158, 57), (173, 73, 74), (165, 81, 148)]


@dataclass
class VizConfig:
    action_score_thr: float = 0.3  # draw actions with score >= this
    top_k: int = 3               # at most this many actions per person
    text_scale: float = 1 / 30   # text height as a fraction of the frame height
    chunk: int = 64              # frames decoded at a time


def class_colour(action_id: int) -> tuple[int, int, int]:
    return PALETTE[int(action_id) % len(PALETTE)]


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def person_actions(rows: pd.DataFrame, cfg: VizConfig) -> dict[int, list[tuple]]:
    """timestamp -> [(box (4,), [(action_id, score), ...])] with the top-k above threshold.

    GT rows (no ``score`` column) get score 1.0.
    """
    if "score" not in rows:
        rows = rows.assign(score=1.0)
    out: dict[int, list[tuple]] = {}
    for (ts, *box), grp in rows.groupby(["timestamp", "x1", "y1", "x2", "y2"], sort=True):
        grp = grp[grp["score"] >= cfg.action_score_thr].nlargest(cfg.top_k, "score")
        acts = list(zip(grp["action_id"].astype(int), grp["score"].astype(float), strict=True))
        out.setdefault(int(ts), []).append((np.asarray(box, np.float32), acts))
    return out


def _overlap(a: tuple, b: tuple) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(box: tuple, block: tuple[float, float], frame: tuple[int, int],
                 taken: list[tuple]) -> tuple[float, float]:
    """Top-left corner of a label block (w, h) for ``box`` (x1, y1, x2, y2 pixels): above
    the box, else below it, else inside its top: the first that keeps clear of the blocks
    already ``taken`` (the least overlap if none does), always inside the frame."""
    (x1, y1, _, y2), (bw, bh), (w, h) = box, block, frame
    x = max(0.0, min(x1, w - bw))
    spots = [(x, y) for y in (y1 - bh, y2, y1) if 0 <= y <= h - bh] or [(x, max(0.0, y1))]
    return min(spots, key=lambda p: sum(_overlap((*p, p[0] + bw, p[1] + bh), t)
                                        for t in taken))


def draw_frame(frame: np.ndarray, people: list[tuple], labelmap: LabelMap | None,
               cfg: VizConfig, title: str | None = None) -> np.ndarray:
    """Draw boxes and action labels on one RGB frame (H, W, 3) uint8.

    Boxes first, then each person's labels as one block placed clear of the others."""
    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    size = max(10, round(h * cfg.text_scale))
    font, line = _font(size), max(1, round(h / 240))
    step = size + 2 * line                          # one label's height
    names = dict(zip(labelmap.ids, labelmap.names, strict=True)) if labelmap else {}
    boxes = [(box * [w, h, w, h]).tolist() for box, _ in people]
    for (_, acts), xyxy in zip(people, boxes, strict=True):
        colour = class_colour(acts[0][0]) if acts else (255, 255, 255)
        d.rectangle(xyxy, outline=colour, width=2 * line)
    taken: list[tuple] = []
    for (_, acts), xyxy in zip(people, boxes, strict=True):
        texts = [(f"{names.get(a, a)} {s:.2f}", a) for a, s in acts]
        if not texts:
            continue
        bw = max(d.textlength(t, font=font) for t, _ in texts) + 2 * line
        x, y = place_labels(xyxy, (bw, len(texts) * step), (w, h), taken)
        taken.append((x, y, x + bw, y + len(texts) * step))
        for text, action_id in texts:
            tw = d.textlength(text, font=font)
            d.rectangle([x, y, x + tw + 2 * line, y + step - 1], fill=class_colour(action_id))
            d.text((x + line, y + line // 2), text, fill=(255, 255, 255), font=font)
            y += step
    if title:
        d.rectangle([0, 0, d.textlength(title, font=font) + 4 * line, size + 2 * line],
                    fill=(0, 0, 0))
        d.text((2 * line, line), title, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def render_video(video: str | os.PathLike, out: str | os.PathLike, predictions: pd.DataFrame,
                 labelmap: LabelMap | None = None, cfg: VizConfig | None = None,
                 ground_truth: pd.DataFrame | None = None) -> Path:
    """Render ``predictions`` (rows of one video) over ``video`` into ``out`` (mp4).

    With ``ground_truth``, the GT is drawn in a second panel on the right.
    """
    cfg = cfg or VizConfig()
    vr = open_video(video)
    pred = person_actions(predictions, cfg)
    gt = person_actions(ground_truth, cfg) if ground_truth is not None else None

    def nearest(table: dict[int, list], t: float) -> list:
        ts = int(round(t))
        return table.get(ts, []) if abs(t - ts) <= 0.5 else []

    def frames():
        n = vr.num_frames
        for start in progress(range(0, n, cfg.chunk), desc=f"render {Path(video).name}",
                              unit="chunk", leave=False):
            batch = vr.read(range(start, min(start + cfg.chunk, n)))
            for i, frame in enumerate(batch):
                t = float(vr.times[start + i])
                left = draw_frame(frame, nearest(pred, t), labelmap, cfg,
                                  "prediction" if gt is not None else None)
                if gt is None:
                    yield left
                else:
                    right = draw_frame(frame, nearest(gt, t), labelmap, cfg, "ground truth")
                    yield np.concatenate([left, right], axis=1)

    out = Path(out)
    write_video(frames(), out, vr.fps)
    return out


def run(cfg: VizConfig, predictions: pd.DataFrame, videos: dict[str, Path], out_dir: str,
        labelmap: LabelMap | None = None, ground_truth: pd.DataFrame | None = None
        ) -> list[Path]:
    """Render every video that has predictions: ``out_dir/<video_id>_actions.mp4``."""
    outs = []
    for video_id, rows in predictions.groupby("video_id", sort=True):
        if video_id not in videos:
            continue
        gt = None
        if ground_truth is not None:
            gt = ground_truth[ground_truth["video_id"] == video_id]
        outs.append(render_video(videos[video_id], Path(out_dir) / f"{video_id}_actions.mp4",
                                 rows, labelmap, cfg, gt))
    return outs
