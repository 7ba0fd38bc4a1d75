"""Stage ``ensemble``: several heads' predictions of the same boxes -> one prediction file.

The members are the prediction tables ``acar eval`` writes (``predictions.parquet``, the
scores with their raw logits: :mod:`pipeline.artifacts.predictions`), or predictions CSVs
(then the table beside each is used; a CSV without one, as an older acar or another tool
wrote, has scores only).  Every member must hold the same boxes: the same keyframes, the
same boxes on each (the same detections and ``eval.det_score_thr``), a row per label-map
class for each box; else one error naming the first keyframe that differs.

The schemes (``ensemble.scheme``), per box and class, over the n members:

* ``mean_score``: the mean of the scores (averaging after the activation);
* ``mean_logit``: the activation of the mean of the logits (averaging before it);
* ``topk_logit``: the activation of the mean of the k largest of the n logits, k =
  ``ensemble.topk`` or n // 2 (at least 1): Jiang et al.'s top-k fusion before the sigmoid;
  "largest" per box and class, so a class that some members see confidently keeps their
  vote while the members that miss it are left out (between the mean, k = n, and the max,
  k = 1);
* ``ap_weight``: the weighted mean of the scores, member m's weight on class c its AP on
  c over the sum of the members' APs on c (ACAR-Net's 2020 ensemble).  The APs are
  *cross-fitted*: the scored videos are split into ``ensemble.folds`` folds (every
  folds-th video of the sorted list, :func:`pipeline.shards.shard_items`), and the boxes of
  each fold are weighted with the APs measured on the other folds only, so no box's
  weights have seen its own labels.  A class without ground truth in the other folds (or
  AP 0 for every member there) weighs the members equally.

``ensemble.select`` chooses which of the given members enter: ``all`` (the default), or
``greedy``: forward selection (Caruana et al. 2004, without replacement), cross-fitted as
``ap_weight``'s weights are.  For each fold, it starts from the member with the best mAP on
the other folds and adds, one at a time, the member whose addition raises the scheme's mAP
there the most, until none raises it; the fold's boxes are then fused from the chosen
members only.  The challenge ensembles were of strong models chosen on held-out data; a
baseline far below the others only dilutes the mean (the default world's methods report).

The activation is the heads' own: a softmax over the label map's pose classes, a sigmoid
for the others (:func:`pipeline.losses.activate`), so "before the sigmoid" is exact.  The
output is a predictions CSV and its prediction table (with the fused logits for the two
logit schemes, without a ``logit`` column for the score schemes), both renamed into place
only when both are written: ``acar eval --predictions`` scores it as it scores a head.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError
from .artifacts.atomic import atomic_path
from .artifacts.labelmap import LabelMap, read_labelmap
from .artifacts.predictions import (
    check_values,
    read_prediction_table,
    read_predictions,
    table_path,
    write_prediction_table,
    write_predictions,
)

SCHEMES = ("mean_score", "mean_logit", "topk_logit", "ap_weight")
SELECTIONS = ("all", "greedy")
NEEDS_LOGITS = ("mean_logit", "topk_logit")
BOX = ["x1", "y1", "x2", "y2"]
BOX_TOL = 1e-5          # a CSV's boxes are printed to 6 significant digits


@dataclass
class EnsembleConfig:
    """stages.yaml ``ensemble``."""

    scheme: str = "mean_logit"      # mean_score | mean_logit | topk_logit | ap_weight
    topk: int | None = None         # topk_logit's k; null: n // 2 of the n members (>= 1)
    folds: int = 2                  # ap_weight, greedy: cross-fitting folds of the videos
    select: str = "all"             # all | greedy: forward selection of the members

    @property
    def fitted(self) -> bool:
        """Whether it fits anything on ground truth (cross-fitted over ``folds``)."""
        return self.scheme == "ap_weight" or self.select == "greedy"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ArtifactError("ensemble.scheme", f"unknown scheme {self.scheme!r}; known: "
                                                   f"{', '.join(SCHEMES)}")
        if self.select not in SELECTIONS:
            raise ArtifactError("ensemble.select", f"unknown selection {self.select!r}; "
                                                   f"known: {', '.join(SELECTIONS)}")
        if self.topk is not None and (isinstance(self.topk, bool) or not isinstance(
                self.topk, int) or self.topk < 1):
            raise ArtifactError("ensemble.topk", f"must be null or an integer >= 1, got "
                                                 f"{self.topk!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ArtifactError("ensemble.folds", f"must be an integer >= 2, got {self.folds!r}")


@dataclass
class Member:
    """One head's predictions, in the wide form: a row per box, a column per class."""

    name: str
    path: str
    scores: np.ndarray                    # (N, K) float64, labelmap order
    logits: np.ndarray | None             # (N, K) float64, or None (a scores-only file)
    boxes: dict = field(default_factory=dict)   # video_id (N,), timestamp (N,), x1..y2 (N,)


# ---- reading and aligning ---------------------------------------------------------------

def read_member(name: str, path: str | os.PathLike, labelmap: LabelMap) -> Member:
    """A member's predictions (a table, or a CSV with its table beside it or without), one
    row per box, the classes in label-map order, the boxes sorted."""
    p = Path(path)
    if p.suffix == ".parquet":
        df, _ = read_prediction_table(p)
    elif table_path(p).is_file():
        df, _ = read_prediction_table(table_path(p))
        p = table_path(p)
    else:
        df = read_predictions(p)
        check_values(df, p)
    if not len(df):
        raise ArtifactError(p, "no prediction rows: nothing to ensemble")
    ids = np.asarray(labelmap.ids, np.int64)
    k = len(ids)
    aid = df["action_id"].to_numpy(np.int64)
    unknown = ~np.isin(aid, ids)
    if unknown.any():
        raise ArtifactError(p, f"action id {int(aid[np.argmax(unknown)])} is not in the label "
                               f"map (ids {', '.join(map(str, ids[:5]))}...)")
    video = df["video_id"].astype(str).to_numpy()
    ts = df["timestamp"].to_numpy(np.int64)
    box = df[BOX].to_numpy(np.float64)                                        # (R, 4)
    rank = np.searchsorted(np.sort(ids), aid)               # class position, sorted ids
    order = np.lexsort((rank, box[:, 3], box[:, 2], box[:, 1], box[:, 0], ts, video))
    video, ts, box, rank = video[order], ts[order], box[order], rank[order]
    if len(order) % k or not (rank.reshape(-1, k) == np.arange(k)).all():
        raise ArtifactError(p, f"each box needs one row per label-map class ({k}): "
                               f"{_first_bad_box(video, ts, rank, k)}")
    same = (video.reshape(-1, k) == video.reshape(-1, k)[:, :1]).all(1) \
        & (ts.reshape(-1, k) == ts.reshape(-1, k)[:, :1]).all(1) \
        & (box.reshape(-1, k, 4) == box.reshape(-1, k, 4)[:, :1]).all((1, 2))
    if not same.all():
        i = int(np.argmin(same)) * k
        raise ArtifactError(p, f"each box needs one row per label-map class ({k}): keyframe "
                               f"{video[i]}@{ts[i]} has a box without all of them")
    to_lm = np.searchsorted(np.sort(ids), ids)               # sorted position of lm's i-th
    scores = df["score"].to_numpy(np.float64)[order].reshape(-1, k)[:, to_lm]
    logits = (df["logit"].to_numpy(np.float64)[order].reshape(-1, k)[:, to_lm]
              if "logit" in df.columns else None)
    boxes = {"video_id": video[::k], "timestamp": ts[::k],
             **{c: box[::k, j] for j, c in enumerate(BOX)}}
    return Member(name, str(p), scores, logits, boxes)


def _first_bad_box(video: np.ndarray, ts: np.ndarray, rank: np.ndarray, k: int) -> str:
    """Where the first box whose classes are not 0..k-1 is (for the error line)."""
    start = 0
    while start < len(rank):
        n = 1
        while start + n < len(rank) and rank[start + n] > rank[start + n - 1]:
            n += 1
        if n != k or rank[start] != 0:
            return f"a box at keyframe {video[start]}@{ts[start]} has {n}"
        start += n
    return f"{len(rank)} rows are not a multiple of {k}"


def check_same_boxes(members: list[Member]) -> None:
    """Every member holds the boxes of the first, else one error naming the keyframe."""
    ref = members[0]
    for m in members[1:]:
        a, b = ref.boxes, m.boxes
        n = min(len(a["video_id"]), len(b["video_id"]))
        diff = (a["video_id"][:n] != b["video_id"][:n]) | (a["timestamp"][:n] != b["timestamp"][:n])
        for c in BOX:
            diff |= np.abs(a[c][:n] - b[c][:n]) > BOX_TOL
        if not diff.any() and len(a["video_id"]) == len(b["video_id"]):
            continue
        i = int(np.argmax(diff)) if diff.any() else n       # the first box that differs
        where = a if i < len(a["video_id"]) else b
        raise ArtifactError(m.path, f"not the same boxes as {ref.path} ({len(b['video_id'])} "
                                    f"vs {len(a['video_id'])} boxes; the first difference at "
                                    f"keyframe {where['video_id'][i]}@{where['timestamp'][i]}):"
                                    " ensemble predictions of the same detections")


# ---- the schemes -------------------------------------------------------------------------

def activate(logits: np.ndarray, labelmap: LabelMap) -> np.ndarray:
    """(N, K) logits -> (N, K) scores, as the heads activate theirs."""
    import torch

    from .losses import activate as torch_activate

    return torch_activate(torch.from_numpy(logits), labelmap.pose_indices).numpy()


def topk_of(n: int, topk: int | None) -> int:
    """k of ``topk_logit`` for n members: ``topk``, else n // 2, at least 1."""
    k = max(1, n // 2) if topk is None else topk
    if k > n:
        raise ArtifactError("ensemble.topk", f"{k} is more than the {n} members")
    return k


def combine(scheme: str, scores: np.ndarray, logits: np.ndarray | None, labelmap: LabelMap,
            topk: int | None = None, weights: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """(M, N, K) member scores/logits -> ((N, K) scores, (N, K) fused logits or None).

    ``weights``: ``ap_weight``'s (M, N, K) weights (summing to 1 over M)."""
    if scheme == "mean_score":
        return scores.mean(0), None
    if scheme == "ap_weight":
        if weights is None:
            raise ValueError("ap_weight needs weights")
        return (weights * scores).sum(0), None
    if logits is None:
        raise ValueError(f"{scheme} needs logits")
    if scheme == "mean_logit":
        fused = logits.mean(0)
    elif scheme == "topk_logit":
        k = topk_of(len(logits), topk)
        fused = np.sort(logits, axis=0)[-k:].mean(0)          # the k largest per box, class
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    return activate(fused, labelmap), fused


def frame_metrics(boxes: dict, scores: np.ndarray, rows: np.ndarray, gt, excluded,
                  labelmap: LabelMap) -> dict:
    """frame_map's metrics of the (len(rows), K) ``scores`` of the boxes ``rows``, against
    the ground truth of their videos."""
    from .ava_eval import frame_map

    k = len(labelmap.ids)
    pred = {"video_id": np.repeat(boxes["video_id"][rows], k),
            "timestamp": np.repeat(boxes["timestamp"][rows], k),
            **{c: np.repeat(boxes[c][rows], k) for c in BOX},
            "action_id": np.tile(np.asarray(labelmap.ids, np.int64), len(rows)),
            "score": scores.reshape(-1)}
    videos = set(boxes["video_id"][rows].tolist())
    return frame_map(gt[gt["video_id"].isin(videos)], pred, labelmap, excluded).metrics


def ap_table(member: Member, rows: np.ndarray, gt, excluded, labelmap: LabelMap) -> np.ndarray:
    """(K,) AP of ``member`` on the boxes ``rows`` (NaN: no ground truth there)."""
    per_class = frame_metrics(member.boxes, member.scores[rows], rows, gt, excluded,
                              labelmap)["per_class"]
    return np.array([np.nan if per_class[str(a)]["ap"] is None else per_class[str(a)]["ap"]
                     for a in labelmap.ids])


def fold_rows(video: np.ndarray, folds: int) -> list[np.ndarray]:
    """(N,) video ids -> per fold, the (N,) bool rows of its videos (every folds-th video of
    the sorted list, :func:`pipeline.shards.shard_items`)."""
    from .shards import shard_items

    videos = sorted(set(video.tolist()))
    return [np.isin(video, list(shard_items(videos, (f, folds)))) for f in range(folds)]


def ap_weight_table(members: list[Member], fit: np.ndarray, gt, excluded,
                    labelmap: LabelMap) -> tuple[np.ndarray, np.ndarray]:
    """``ap_weight``'s (M, K) APs of ``members`` on the boxes ``fit`` and their weights: each
    AP over the members' sum on the class; equal where the class has no ground truth there
    (or AP 0 for every member)."""
    m, k = len(members), len(labelmap.ids)
    aps = np.stack([ap_table(mb, fit, gt, excluded, labelmap) for mb in members]) \
        if len(fit) else np.full((m, k), np.nan)                               # (M, K)
    w = np.nan_to_num(aps, nan=0.0)
    total = w.sum(0)                                                           # (K,)
    return aps, np.where(total > 0, w / np.where(total > 0, total, 1), 1.0 / m)


def fuse(cfg: EnsembleConfig, members: list[Member], rows: np.ndarray,
         labelmap: LabelMap, weights: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """The scheme's (len(rows), K) scores (and fused logits) of the boxes ``rows``;
    ``weights``: ``ap_weight``'s (M, K)."""
    scores = np.stack([mb.scores[rows] for mb in members])                     # (M, n, K)
    logits = np.stack([mb.logits[rows] for mb in members]) \
        if cfg.scheme in NEEDS_LOGITS else None
    w = None if weights is None else np.broadcast_to(weights[:, None], scores.shape)
    topk = cfg.topk if cfg.topk is None else min(cfg.topk, len(members))
    return combine(cfg.scheme, scores, logits, labelmap, topk, w)


def greedy_select(cfg: EnsembleConfig, members: list[Member], fit: np.ndarray, gt, excluded,
                  labelmap: LabelMap) -> tuple[list[int], list[dict]]:
    """Forward selection on the boxes ``fit``: the members (indices, in the given order) and
    the steps (who was added, the mAP after it); every member, and no step, where ``fit``
    has no ground truth."""
    def score(chosen: list[int]) -> float:
        sub = [members[i] for i in chosen]
        w = ap_weight_table(sub, fit, gt, excluded, labelmap)[1] \
            if cfg.scheme == "ap_weight" else None
        fused = fuse(cfg, sub, fit, labelmap, w)[0]
        value = frame_metrics(members[0].boxes, fused, fit, gt, excluded, labelmap)["mAP"]
        return np.nan if value is None else float(value)

    singles = [score([i]) for i in range(len(members))]
    if np.isnan(singles).all():       # no ground truth there: nothing to choose on, all
        return list(range(len(members))), []
    chosen = [int(np.nanargmax(singles))]              # ties: the first given
    best = singles[chosen[0]]
    steps = [{"add": members[chosen[0]].name, "mAP": round(best, 6)}]
    while len(chosen) < len(members):
        tried = [(score(chosen + [i]), i) for i in range(len(members)) if i not in chosen]
        value, i = max(tried, key=lambda t: (np.nan_to_num(t[0], nan=-1.0), -t[1]))
        if not value > best:          # NaN too
            break
        chosen.append(i)
        best = value
        steps.append({"add": members[i].name, "mAP": round(best, 6)})
    return sorted(chosen), steps


def fitted_fuse(cfg: EnsembleConfig, members: list[Member], gt, excluded, labelmap: LabelMap
                ) -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
    """The cross-fitted scheme (``ap_weight``, or any scheme with ``select: greedy``): each
    fold's boxes fused with what the other folds fitted.  Returns the (N, K) scores, the
    fused logits (or None) and per fold what was fitted (for the record)."""
    n, k = members[0].scores.shape
    scores = np.empty((n, k))
    logits = np.empty((n, k)) if cfg.scheme in NEEDS_LOGITS else None
    record = []
    for f, held in enumerate(fold_rows(members[0].boxes["video_id"], cfg.folds)):
        fit, out = np.flatnonzero(~held), np.flatnonzero(held)
        chosen, steps = list(range(len(members))), None
        if cfg.select == "greedy" and len(fit):
            chosen, steps = greedy_select(cfg, members, fit, gt, excluded, labelmap)
        sub = [members[i] for i in chosen]
        entry: dict = {"fold": f, "videos": len(set(members[0].boxes["video_id"][out])),
                       "fitted_on_videos": len(set(members[0].boxes["video_id"][fit]))}
        w = None
        if cfg.scheme == "ap_weight":
            aps, w = ap_weight_table(sub, fit, gt, excluded, labelmap)
            entry["ap"] = {mb.name: _by_id(aps[i], labelmap) for i, mb in enumerate(sub)}
            entry["weight"] = {mb.name: _by_id(w[i], labelmap) for i, mb in enumerate(sub)}
        if steps is not None:
            entry["members"], entry["steps"] = [mb.name for mb in sub], steps
        fused, fused_logits = fuse(cfg, sub, out, labelmap, w)
        scores[out] = fused
        if logits is not None:
            logits[out] = fused_logits
        record.append(entry)
    return scores, logits, record


def _by_id(values: np.ndarray, labelmap: LabelMap) -> dict[str, float | None]:
    return {str(a): None if np.isnan(v) else round(float(v), 6)
            for a, v in zip(labelmap.ids, values, strict=True)}


# ---- the stage ---------------------------------------------------------------------------

def run(cfg: EnsembleConfig, members: list[tuple[str, str | os.PathLike]],
        labelmap: str | os.PathLike, out: str | os.PathLike,
        annotations: str | os.PathLike | None = None,
        excluded: str | os.PathLike | None = None) -> dict:
    """Ensemble ``members`` ((name, predictions path) pairs) into the predictions CSV ``out``
    and its prediction table; ``annotations`` (and ``excluded``): the ground truth
    ``ap_weight`` fits its cross-fitted weights on.  Returns a summary (members, scheme, k,
    boxes; per fold the weights of ``ap_weight``)."""
    import pandas as pd

    if len(members) < 2:
        raise ArtifactError("--predictions", f"an ensemble needs at least 2 members, got "
                                             f"{len(members)}")
    names = [n for n, _ in members]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ArtifactError("--predictions", f"member name {twice[0]!r} given twice (name "
                                             "them NAME=PATH)")
    if cfg.fitted and annotations is None:
        what = "ensemble.scheme ap_weight fits its weights" if cfg.scheme == "ap_weight" \
            else "ensemble.select greedy chooses its members"
        raise ArtifactError("--annotations", f"{what} on ground truth: give --annotations")
    lm = read_labelmap(labelmap)
    if cfg.scheme == "topk_logit":
        topk_of(len(members), cfg.topk)                   # a bad k fails before any reading
    read = [read_member(n, p, lm) for n, p in members]
    if cfg.scheme in NEEDS_LOGITS:
        for mb in read:
            if mb.logits is None:
                raise ArtifactError(mb.path, f"no logits (scores only: no prediction table "
                                             f"beside it, as an older acar's eval wrote): "
                                             f"ensemble.scheme {cfg.scheme} needs them; rerun "
                                             "acar eval, or use mean_score / ap_weight")
    check_same_boxes(read)
    summary: dict = {"scheme": cfg.scheme, "members": {n: str(p) for n, p in members},
                     "boxes": len(read[0].scores), "select": cfg.select}
    if cfg.scheme == "topk_logit":
        summary["k"] = topk_of(len(read), cfg.topk)      # of all members (greedy: of those
    if cfg.fitted:                                       # chosen, at most their number)
        from .artifacts.annotations import read_annotations, read_excluded

        gt = read_annotations(annotations)
        ex = read_excluded(excluded)
        fused, fused_logits, summary["folds"] = fitted_fuse(cfg, read, gt, ex, lm)
    else:
        fused, fused_logits = fuse(cfg, read, np.arange(len(read[0].scores)), lm)
    b, (n, k) = read[0].boxes, fused.shape
    df = pd.DataFrame({"video_id": np.repeat(b["video_id"], k),
                       "timestamp": np.repeat(b["timestamp"], k),
                       **{c: np.repeat(b[c], k) for c in BOX},
                       "action_id": np.tile(np.asarray(lm.ids, np.int64), n),
                       "score": np.clip(fused, 0.0, 1.0).reshape(-1)})
    if fused_logits is not None:
        df["logit"] = fused_logits.reshape(-1)
    meta = {"source": "ensemble", "scheme": cfg.scheme, "members": summary["members"],
            "select": cfg.select,
            **{key: summary[key] for key in ("k", "folds") if key in summary}}
    with ExitStack() as stack:       # both renamed into place, only when both are written
        tmp_csv = stack.enter_context(atomic_path(out))
        tmp_table = stack.enter_context(atomic_path(table_path(out)))
        write_predictions(df, tmp_csv)
        write_prediction_table(df, tmp_table, meta)
    return summary


__all__ = ["SCHEMES", "SELECTIONS", "EnsembleConfig", "check_same_boxes", "combine",
           "fitted_fuse", "greedy_select", "read_member", "run"]
