"""Stage-free rendering: draw AVA predictions (and optionally GT) over their videos.

Each keyframe's boxes and top actions are drawn on the frames within half a second of
it (the clip that the keyframe's label describes), so they are carried over to the
frames in between.  Text is sized from the frame height, so it stays readable from
240p to 1080p.  A box takes the colour of its person, the same over keyframes (its
``track_id`` or ``person_id`` when the rows have one, else a greedy IoU match between
consecutive keyframes: :func:`person_ids`); a label takes the colour of its class, with
black or white text, whichever contrasts more, and a border that contrasts with the label
(so a brown label stays visible on a brown scene).  The output is an h264 mp4 without
audio (PyAV).  ``acar viz`` and ``acar demo`` both use :func:`render_video`; ``acar viz
--detections`` draws a detections file (boxes and scores) before any model exists.
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


# Person colours: saturated and light enough to stand out on most scenes, in an order where
# neighbours differ in hue (a person keeps its colour over the video).
PERSON_PALETTE = [(255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 200, 0),
                  (220, 64, 255), (0, 230, 230), (255, 128, 0), (255, 105, 180),
                  (160, 255, 96), (128, 128, 255)]
MATCH_IOU = 0.3        # a box continues a person of the previous keyframe at this IoU


@dataclass
class VizConfig:
    action_score_thr: float = 0.3  # draw actions with score >= this
    det_score_thr: float = 0.0   # --detections: draw the boxes scoring >= this
    top_k: int = 3               # at most this many actions per person
    text_scale: float = 1 / 30   # text height as a fraction of the frame height
    chunk: int = 64              # frames decoded at a time


def class_colour(action_id: int) -> tuple[int, int, int]:
    return PALETTE[int(action_id) % len(PALETTE)]


def person_colour(person: int) -> tuple[int, int, int]:
    return PERSON_PALETTE[int(person) % len(PERSON_PALETTE)]


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour, in [0, 1]."""
    c = np.asarray(rgb, np.float64) / 255
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG contrast ratio of two colours, 1 (same) .. 21 (black on white)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``fill``."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast(fill, black) >= contrast(fill, white) else white


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _overlap(tuple(a), tuple(b))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def person_ids(table: dict[int, list[tuple]], min_iou: float = MATCH_IOU
               ) -> dict[int, list[int]]:
    """timestamp -> a person number per entry of ``table[timestamp]`` (:func:`person_actions`),
    stable over keyframes: an entry's own id when it has one (a third element, from a
    ``track_id``/``person_id`` column), else a greedy IoU match with the previous keyframe
    (highest IoU first, at least ``min_iou``); an unmatched box is a new person."""
    out: dict[int, list[int]] = {}
    prev: list[tuple[np.ndarray, int]] = []
    fresh = 0
    used_ids = {int(e[2]) for people in table.values() for e in people
                if len(e) > 2 and e[2] is not None}
    for ts in sorted(table):
        people = table[ts]
        ids: list[int | None] = [int(e[2]) if len(e) > 2 and e[2] is not None else None
                                 for e in people]
        pairs = sorted(((_iou(box, pbox), i, pid) for i, (box, *_) in enumerate(people)
                        if ids[i] is None for pbox, pid in prev), reverse=True)
        taken = set(i for i in ids if i is not None)
        for iou, i, pid in pairs:
            if iou < min_iou:
                break
            if ids[i] is None and pid not in taken:
                ids[i] = pid
                taken.add(pid)
        for i in range(len(ids)):
            if ids[i] is None:
                while fresh in used_ids:
                    fresh += 1
                ids[i] = fresh
                used_ids.add(fresh)
        out[ts] = [int(i) for i in ids]
        prev = [(people[i][0], out[ts][i]) for i in range(len(people))]
    return out


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


ID_COLUMNS = ("track_id", "person_id")    # a person's own id, when the rows carry one


def person_actions(rows: pd.DataFrame, cfg: VizConfig) -> dict[int, list[tuple]]:
    """timestamp -> [(box (4,), [(action_id, score), ...], person id or None)] with the top-k
    actions above threshold.

    GT rows (no ``score`` column) get score 1.0; the person id is the rows' ``track_id`` or
    ``person_id`` (None without one: :func:`person_ids` then matches boxes).
    """
    if "score" not in rows:
        rows = rows.assign(score=1.0)
    id_col = next((c for c in ID_COLUMNS if c in rows and rows[c].notna().all()), None)
    out: dict[int, list[tuple]] = {}
    for (ts, *box), grp in rows.groupby(["timestamp", "x1", "y1", "x2", "y2"], sort=True):
        pid = int(grp[id_col].iloc[0]) if id_col else None
        grp = grp[grp["score"] >= cfg.action_score_thr].nlargest(cfg.top_k, "score")
        acts = list(zip(grp["action_id"].astype(int), grp["score"].astype(float), strict=True))
        out.setdefault(int(ts), []).append((np.asarray(box, np.float32), acts, pid))
    return out


def detection_people(dets: pd.DataFrame) -> dict[int, list[tuple]]:
    """A detections table as :func:`person_actions` gives predictions: one entry per box,
    its label the detection score (``action_id`` None: drawn as ``person 0.81``)."""
    id_col = next((c for c in ID_COLUMNS if c in dets and dets[c].notna().all()), None)
    out: dict[int, list[tuple]] = {}
    for row in dets.sort_values(["timestamp", "x1", "y1"]).itertuples(index=False):
        box = np.asarray([row.x1, row.y1, row.x2, row.y2], np.float32)
        pid = int(getattr(row, id_col)) if id_col else None
        out.setdefault(int(row.timestamp), []).append((box, [(None, float(row.score))], pid))
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
               cfg: VizConfig, title: str | None = None,
               persons: list[int] | None = None) -> np.ndarray:
    """Draw boxes and action labels on one RGB frame (H, W, 3) uint8.

    ``people``: ``(box, [(action_id, score), ...], ...)``; ``persons``: the person number
    of each (its box colour; default: its position).  An action id None is a detection
    score (``person 0.81``).  Boxes first, then each person's labels as one block placed
    clear of the others."""
    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    size = max(10, round(h * cfg.text_scale))
    font, line = _font(size), max(1, round(h / 240))
    step = size + 2 * line                          # one label's height
    names = dict(zip(labelmap.ids, labelmap.names, strict=True)) if labelmap else {}
    boxes = [(p[0] * [w, h, w, h]).tolist() for p in people]
    persons = list(range(len(people))) if persons is None else persons
    for xyxy, pid in zip(boxes, persons, strict=True):
        d.rectangle(xyxy, outline=person_colour(pid), width=2 * line)
    taken: list[tuple] = []
    for (_, acts, *_), xyxy, pid in zip(people, boxes, persons, strict=True):
        texts = [(f"{'person' if a is None else names.get(a, a)} {s:.2f}", a) for a, s in acts]
        if not texts:
            continue
        bw = max(d.textlength(t, font=font) for t, _ in texts) + 2 * line
        x, y = place_labels(xyxy, (bw, len(texts) * step), (w, h), taken)
        taken.append((x, y, x + bw, y + len(texts) * step))
        for text, action_id in texts:
            tw = d.textlength(text, font=font)
            fill = person_colour(pid) if action_id is None else class_colour(action_id)
            edge = text_colour(fill)          # black or white: the block stands out anywhere
            d.rectangle([x, y, x + tw + 2 * line, y + step - 1], fill=fill, outline=edge,
                        width=max(1, line // 2))
            d.text((x + line, y + line // 2), text, fill=text_colour(fill), font=font)
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
    pred = person_actions(predictions, cfg)
    gt = person_actions(ground_truth, cfg) if ground_truth is not None else None
    return render_people(video, out, pred, labelmap, cfg, gt)


def render_people(video: str | os.PathLike, out: str | os.PathLike,
                  pred: dict[int, list[tuple]], labelmap: LabelMap | None = None,
                  cfg: VizConfig | None = None, gt: dict[int, list[tuple]] | None = None
                  ) -> Path:
    """Render per-keyframe people (:func:`person_actions`, :func:`detection_people`)."""
    cfg = cfg or VizConfig()
    vr = open_video(video)
    ids = {"pred": person_ids(pred), "gt": person_ids(gt) if gt is not None else {}}

    def nearest(table: dict[int, list], t: float, which: str) -> tuple[list, list | None]:
        ts = int(round(t))
        if abs(t - ts) > 0.5 or ts not in table:
            return [], []
        return table[ts], ids[which][ts]

    def frames():
        n = vr.num_frames
        for start in progress(range(0, n, cfg.chunk), desc=f"render {Path(video).name}",
                              unit="chunk", leave=False):
            batch = vr.read(range(start, min(start + cfg.chunk, n)))
            for i, frame in enumerate(batch):
                t = float(vr.times[start + i])
                people, pids = nearest(pred, t, "pred")
                left = draw_frame(frame, people, labelmap, cfg,
                                  "prediction" if gt is not None else None, pids)
                if gt is None:
                    yield left
                else:
                    people, pids = nearest(gt, t, "gt")
                    right = draw_frame(frame, people, labelmap, cfg, "ground truth", pids)
                    yield np.concatenate([left, right], axis=1)

    out = Path(out)
    write_video(frames(), out, vr.fps)
    return out


def run_detections(cfg: VizConfig, detections: pd.DataFrame, videos: dict[str, Path],
                   out_dir: str) -> list[Path]:
    """Draw a detections table (boxes with scores, below ``cfg.det_score_thr`` left out) over
    every video that has detections: ``out_dir/<video_id>_detections.mp4``."""
    outs = []
    dets = detections[detections["score"] >= cfg.det_score_thr]
    for video_id, rows in dets.groupby("video_id", sort=True):
        if video_id in videos:
            outs.append(render_people(videos[video_id],
                                      Path(out_dir) / f"{video_id}_detections.mp4",
                                      detection_people(rows), None, cfg))
    return outs


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
