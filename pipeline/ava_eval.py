"""Frame-mAP at IoU 0.5 (first version; replaced by the exact, vectorised evaluator)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .artifacts.annotations import read_annotations, read_excluded
from .artifacts.labelmap import LabelMap, read_labelmap
from .artifacts.metrics import write_metrics
from .artifacts.predictions import read_predictions


@dataclass
class EvalResult:
    metrics: dict


def _iou(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], gts[:, :2])
    rb = np.minimum(box[2:], gts[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    union = np.prod(box[2:] - box[:2]) + np.prod(gts[:, 2:] - gts[:, :2], axis=1) - inter
    return inter / union


def _ap(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    fp = 1 - tp
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    rec = ctp / num_gt
    prec = ctp / np.maximum(ctp + cfp, 1e-12)
    rec = np.concatenate([[0.0], rec, [1.0]])
    prec = np.concatenate([[0.0], prec, [0.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    idx = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return float(np.sum((rec[idx] - rec[idx - 1]) * prec[idx]))


def frame_map(gt: pd.DataFrame, pred: pd.DataFrame, labelmap: LabelMap,
              excluded: pd.DataFrame | None = None) -> EvalResult:
    ids = set(labelmap.ids)
    gt = gt[gt["action_id"].isin(ids)]
    pred = pred[pred["action_id"].isin(ids)]
    if excluded is not None and len(excluded):
        ex = set(zip(excluded["video_id"], excluded["timestamp"], strict=True))
        gt = gt[[k not in ex for k in zip(gt["video_id"], gt["timestamp"], strict=True)]]
        pred = pred[[k not in ex for k in zip(pred["video_id"], pred["timestamp"], strict=True)]]
    pred = pred.assign(_o=np.arange(len(pred))).sort_values(
        ["video_id", "timestamp", "score", "_o"], ascending=[True, True, False, True])
    pred = pred.groupby(["video_id", "timestamp"], sort=False).head(50)
    valid = (pred["x1"] < pred["x2"]) & (pred["y1"] < pred["y2"])
    pred = pred[valid]
    per_class = {}
    for a, name in zip(labelmap.ids, labelmap.names, strict=True):
        g = gt[gt["action_id"] == a]
        p = pred[pred["action_id"] == a]
        if len(g) == 0:
            per_class[str(a)] = {"name": name, "ap": None, "num_gt": 0}
            continue
        gboxes = {k: v[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
                  for k, v in g.groupby(["video_id", "timestamp"])}
        used = {k: np.zeros(len(v), bool) for k, v in gboxes.items()}
        scores, tps = [], []
        for k, grp in p.groupby(["video_id", "timestamp"]):
            grp = grp.sort_values(["score", "_o"], ascending=[False, True])
            for row in grp[["x1", "y1", "x2", "y2", "score"]].to_numpy(np.float64):
                tp = False
                if k in gboxes:
                    ious = _iou(row[:4], gboxes[k])
                    j = int(np.argmax(ious))
                    if ious[j] >= 0.5 and not used[k][j]:
                        used[k][j] = tp = True
                scores.append(row[4])
                tps.append(tp)
        ap = _ap(np.array(scores), np.array(tps, bool), len(g)) if scores else 0.0
        per_class[str(a)] = {"name": name, "ap": ap, "num_gt": int(len(g))}
    aps = [v["ap"] for v in per_class.values() if v["ap"] is not None]
    supers = {}
    for a, s in zip(labelmap.ids, labelmap.superclasses, strict=True):
        if s:
            supers.setdefault(s, []).append(per_class[str(a)]["ap"])
    per_super = {s: (float(np.mean([x for x in v if x is not None]))
                     if any(x is not None for x in v) else None) for s, v in supers.items()}
    return EvalResult({"mAP": float(np.mean(aps)) if aps else float("nan"),
                       "per_class": per_class, "per_superclass": per_super})


def evaluate_files(predictions, annotations, labelmap, excluded=None, out=None,
                   plots_dir=None) -> dict:
    lm = read_labelmap(labelmap)
    res = frame_map(read_annotations(annotations), read_predictions(predictions), lm,
                    read_excluded(excluded))
    if out is not None:
        write_metrics(res.metrics, out)
    if plots_dir is not None:
        os.makedirs(plots_dir, exist_ok=True)
    return res.metrics
