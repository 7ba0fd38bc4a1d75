"""AVA frame-mAP, computed exactly as ActivityNet's ``get_ava_performance.py`` (2019) does, fast,
or as another public evaluator does (:data:`MODES`).

A pure function: it reads its inputs and returns numbers; writing ``metrics.json`` and the
plots is the eval stage's job (:mod:`pipeline.evaluate`).  The rules below are those of the
default mode, ``official-2019``; the other modes (``official-2020``, ``mmaction2``,
``slowfast``) change a few of them, each a switch of :class:`EvalMode`.

The official evaluator (AVA v2.1/v2.2, with excluded timestamps) works frame by frame in
Python; this module reproduces its numbers with whole-array numpy operations.  What the
official code does, and how it is reproduced here:

* **Frames** are ``(video_id, int(timestamp))``: ``0902`` and ``902`` are one frame.
* **Label map**: ground-truth (GT) and prediction rows whose action id is not in the label map
  are dropped before anything else.
* **Top-50 cap**: per frame, predictions stream through a min-heap of capacity 50 holding
  tuples ``(score, action_id, y1, x1, y2, x2)``.  A row enters a full heap only if its score
  is strictly greater than the heap's minimum, and it evicts the *smallest tuple*.  So all rows
  scoring above the 50th-best score s* are kept; of the rows scoring exactly s*, the candidates
  are those among the first 50 rows (in file order) scoring >= s*, and the ones kept are the
  candidates with the largest ``(action_id, y1, x1, y2, x2)``.  (That closed form is derived
  in :func:`_cap_mask`.)  Rows with invalid boxes take slots; GT has no cap.
* **Excluded frames**: GT and predictions on them are dropped.  Predictions on a frame with no
  GT are all false positives.
* **Matching**, per frame and class, predictions in descending score order: each takes the GT
  box of maximal IoU (``np.argmax``: the first maximum; a NaN IoU wins) and is a true positive
  iff that IoU >= 0.5 and the GT box is still unmatched; no fallback to another GT box.
  Predictions with ``x1 >= x2`` or ``y1 >= y2`` are removed after the cap.  IoU has no +1 and
  is computed with the same float64 operations as ``np_box_ops.iou``.  All GT rows count (also
  exact duplicates, which can never both be matched).
* **GT order within a frame** decides ``argmax`` ties: the official reader takes a GT row's
  8th column (``person_id``) as its "score", so GT boxes are ordered by descending person_id,
  then by their position in a heap array.  Here: descending person_id, then file order; frames
  where an exact IoU tie between different boxes could reach the 0.5 threshold are redone with
  the heap order itself (:func:`_official_gt_rank`).
* **AP**: VOC all-point interpolation as in ``object_detection/utils/metrics.py``.  A class with
  GT but no predictions has AP 0; a class without GT has AP NaN (``null``) and is left out of the
  mean.  ``mAP`` is the mean over classes with at least one GT row.

Two orders cannot be reproduced, because the official result itself depends on them only
through details that vary (heap array layout, numpy's unstable ``argsort``); only *equal*
scores are affected.  The rules used here: within a frame, equal-score predictions are taken in
file order; when ranking a class for AP, equal scores are ordered as a stable sort reversed
would order the official concatenation (frames in order of first appearance in the prediction
file, later ones first).  With distinct scores the result is the official one.
"""

from __future__ import annotations

import heapq
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .artifacts import ArtifactError
from .artifacts import annotations as ann
from .artifacts import predictions as pred_artifact
from .artifacts.annotations import read_annotation_columns
from .artifacts.csvio import Codes, line_of_row, read_columns, read_csv
from .artifacts.labelmap import LabelMap, read_labelmap
from .artifacts.predictions import read_prediction_columns

if TYPE_CHECKING:
    import pandas as pd

# A table: a pandas DataFrame, or (the pandas-free scoring path) a dict of numpy columns with
# strings as csvio.Codes.  Scoring a file never imports pandas (~0.5 s of start-up).
Table = Union["pd.DataFrame", Mapping[str, Any]]

CAPACITY = 50
IOU_THRESHOLD = 0.5


@dataclass
class EvalResult:
    """``metrics`` is the ``metrics.json`` dict.  ``precision``/``recall`` map an action id
    (with GT) to the precision and recall after each of its ranked predictions (the official,
    non-interpolated curve; empty when the class has no prediction)."""

    metrics: dict
    precision: dict[int, np.ndarray] = field(default_factory=dict)
    recall: dict[int, np.ndarray] = field(default_factory=dict)
    num_gt: dict[int, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class EvalMode:
    """The switches in which the public AVA evaluators differ (see :data:`MODES`).

    * ``cap``: per-frame top-k heap of the official reader (50), or ``None``: every row.
    * ``exclusions``: the excluded-timestamps file: ``"drop"`` its frames' GT and
      predictions; ``"dets"`` drop their predictions only, their GT still counts in each
      class's number of GT boxes (mmaction2); ``"none"``: no such file is accepted.
    * ``unlabelled``: predictions on a frame without GT: ``"fp"`` (false positives);
      ``"ignore-absent"``: ignored when the frame is absent from the GT file (a row of any
      class, or a 2-column ``video_id,timestamp`` row, makes it present); ``"ignore-empty"``:
      ignored when the frame has no GT row of a label-map class.
    * ``timestamps``: ``"int"`` (``%04d`` keys, a fractional timestamp is an error) or
      ``"decimal"`` (``%.6f`` keys: ``902.5`` is a frame; 2-column GT rows list empty frames).
    * ``float32``: boxes and scores cast to float32 before matching and ranking.
    * ``drop_degenerate``: predictions with ``x1 >= x2`` or ``y1 >= y2`` removed.
    * ``classes``: ``"gt"``: mAP over the classes with GT; ``"gt+det"``: over the classes
      with GT and at least one counted prediction.
    * ``sort``: each frame's predictions matched in descending score (``True``) or in file
      order (``False``).
    * ``gt_order``: order of a frame's GT boxes, which decides exact IoU ties: ``"heap"``
      (descending person_id over the official reader's heap), ``"person_id"`` (a stable sort
      by descending person_id), ``"file"``.
    """

    cap: int | None = CAPACITY
    exclusions: str = "drop"
    unlabelled: str = "fp"
    timestamps: str = "int"
    float32: bool = False
    drop_degenerate: bool = True
    classes: str = "gt"
    sort: bool = True
    gt_order: str = "heap"


MODES: dict[str, EvalMode] = {
    # ActivityNet get_ava_performance.py at 3fee089 (ACAR-Net, PySlowFast's offline path).
    "official-2019": EvalMode(),
    # ActivityNet get_ava_performance.py at HEAD.
    "official-2020": EvalMode(exclusions="none", unlabelled="ignore-absent",
                              timestamps="decimal"),
    # mmaction2 mmaction/evaluation/functional/ava_utils.py ava_eval().
    "mmaction2": EvalMode(cap=None, exclusions="dets", unlabelled="ignore-empty", float32=True,
                          drop_degenerate=False, classes="gt+det", gt_order="person_id"),
    # PySlowFast slowfast/utils/ava_eval_helper.py run_evaluation() (in-memory path).
    "slowfast": EvalMode(cap=None, sort=False, gt_order="file"),
}
DEFAULT_MODE = "official-2019"

SWITCH_DOC = {  # switch -> what it decides (the table of README and --help)
    "cap": "top-k rows per frame",
    "exclusions": "excluded file",
    "unlabelled": "dets on GT-less frames",
    "timestamps": "frame key",
    "float32": "float32 boxes, scores",
    "drop_degenerate": "drop flat dets",
    "classes": "classes in the mean",
    "sort": "match by score",
    "gt_order": "GT order (IoU ties)",
}


def get_mode(mode: str | EvalMode) -> EvalMode:
    """``mode`` by name (one of :data:`MODES`) or as given."""
    if isinstance(mode, EvalMode):
        return mode
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"unknown eval mode '{mode}'; known: {', '.join(MODES)}") from None


def check_mode(mode: str | EvalMode, excluded: str | os.PathLike | None) -> EvalMode:
    """The mode, after checking that it takes an excluded-timestamps file if one is given."""
    m = get_mode(mode)
    if m.exclusions == "none" and excluded is not None:
        raise ArtifactError(excluded, "this mode takes no excluded-timestamps file: list "
                                      "empty keyframes as 2-column rows of the ground truth")
    return m


def switch_table() -> list[list[str]]:
    """Rows ``[switch, meaning, value per mode...]`` of the switches table."""
    rows = [["switch", "decides", *MODES]]
    for name, doc in SWITCH_DOC.items():
        rows.append([name, doc, *(_show(getattr(m, name)) for m in MODES.values())])
    return rows


def _show(v) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


# --------------------------------------------------------------------------- public API


def frame_map(gt: Table, pred: Table, labelmap: LabelMap,
              excluded: Table | None = None, mode: str | EvalMode = DEFAULT_MODE,
              gt_frames: Table | None = None,
              action_thr: float | None = None) -> EvalResult:
    """AVA frame-mAP@0.5 of ``pred`` against ``gt``, scored as ``mode`` does.

    Tables are DataFrames or dicts of numpy columns (:data:`Table`).
    ``gt`` has the columns of ``annotations.COLUMNS`` (``person_id`` optional), ``pred``
    those of ``predictions.COLUMNS``, ``excluded`` (optional) ``video_id, timestamp``;
    ``gt_frames`` (``video_id, timestamp``, optional): keyframes the GT file lists without a
    box (its 2-column rows; they matter where ``unlabelled`` is ``"ignore-absent"``).
    ``action_thr``: predictions scoring ``<=`` it are dropped first (mmaction2's
    ``action_thr``).  Timestamps are integers, or in ``"decimal"`` mode decimal strings or
    numbers.
    """
    m = get_mode(mode)
    ids = np.asarray(labelmap.ids, dtype=np.int64)
    score = _num(pred["score"], np.float64)
    if np.isnan(score).any():
        raise ValueError(f"prediction score is NaN in row {int(np.argmax(np.isnan(score)))}")
    if m.exclusions == "none" and excluded is not None and len(excluded["timestamp"]):
        raise ValueError("this mode takes no excluded timestamps: list empty keyframes as "
                         "2-column 'video_id,timestamp' rows of the ground truth")
    empty = {"video_id": np.zeros(0, dtype=object), "timestamp": np.zeros(0, dtype=np.int64)}
    excluded = empty if excluded is None else excluded
    gt_frames = empty if gt_frames is None else gt_frames
    # Predictions: label-map filter first (frames are numbered in order of first appearance
    # among the remaining rows, as the official reader's dict is), then grouped by frame.
    p_cls = _class_index(_num(pred["action_id"]), ids)
    keep_row = p_cls >= 0
    if action_thr is not None:
        keep_row &= score > action_thr
    rows = _subset(keep_row)
    p_video, p_time = pred["video_id"], pred["timestamp"]
    if not isinstance(rows, slice):
        p_video, p_time = _take(p_video, rows), _take(p_time, rows)
    stamp = _decimal_stamps if m.timestamps == "decimal" else _int_stamps
    frame, g_frame, x_frame, e_frame, n_frames = _frame_codes(
        [(p_video, stamp(p_time)), (gt["video_id"], stamp(gt["timestamp"])),
         (excluded["video_id"], stamp(excluded["timestamp"])),
         (gt_frames["video_id"], stamp(gt_frames["timestamp"]))])
    is_excluded = np.zeros(n_frames, dtype=bool)
    is_excluded[x_frame] = True
    n_pred = len(score)
    rows = np.arange(n_pred)[rows]  # original row of each remaining row
    order = _group_order(frame, n_frames)
    if not isinstance(order, slice):
        rows, frame = rows[order], frame[order]
    score = score[rows] if len(rows) < n_pred or not isinstance(order, slice) else score

    def tuple_keys(idx: np.ndarray) -> list[np.ndarray]:
        r = rows[idx]
        return [r, *(_num(pred[c], np.float64)[r] for c in ("x2", "y2", "x1", "y1")),
                _num(pred["action_id"])[r]]

    keep = _cap_mask(frame, score, tuple_keys, n_frames, m.cap) if m.cap else \
        np.ones(len(frame), dtype=bool)
    # Whole frames dropped (so after the cap is the same), then invalid boxes.
    g_cls_all = _class_index(_num(gt["action_id"]), ids)
    drop_frame = is_excluded.copy()
    if m.unlabelled == "ignore-absent":
        drop_frame[np.setdiff1d(np.arange(n_frames), np.concatenate([g_frame, e_frame]))] = True
    elif m.unlabelled == "ignore-empty":
        labelled = np.zeros(n_frames, dtype=bool)
        labelled[g_frame[g_cls_all >= 0]] = True
        drop_frame |= ~labelled
    keep = np.flatnonzero(keep & ~drop_frame[frame]) if drop_frame.any() else \
        np.flatnonzero(keep)
    kept = rows[keep]
    boxes = _boxes(pred, kept)
    if m.float32:
        boxes = tuple(b.astype(np.float32) for b in boxes)
    if m.drop_degenerate:
        valid = _subset((boxes[0] < boxes[2]) & (boxes[1] < boxes[3]))
        keep, kept = keep[valid], kept[valid]
        boxes = tuple(b[valid] for b in boxes)
    else:  # kept; an inverted box is what such a tool refuses (np_box_list.BoxList)
        inverted = (boxes[0] > boxes[2]) | (boxes[1] > boxes[3])
        if inverted.any():
            raise ValueError(f"prediction row {int(kept[np.argmax(inverted)])} has x1 > x2 "
                             "or y1 > y2, which this mode's tool rejects")
    frame, score, p_cls = frame[keep], score[keep], p_cls[kept]
    rank_score = score.astype(np.float32).astype(np.float64) if m.float32 else score

    # Ground truth: label-map filter and excluded frames; all remaining rows count.
    matchable = (g_cls_all >= 0) & ~is_excluded[g_frame]
    g_rows = np.flatnonzero(matchable)
    gtab = _GroundTruth(gt, g_rows, g_frame[g_rows], g_cls_all[g_rows], len(ids), n_frames,
                        m.gt_order, m.float32)
    tp, tie_frames = _match(frame, p_cls, score, boxes, gtab, m.sort)
    if len(tie_frames) and m.gt_order == "heap":
        gtab.use_heap_order(tie_frames, _num(gt["action_id"])[g_rows])
        tp, _ = _match(frame, p_cls, score, boxes, gtab, m.sort)

    counted = g_cls_all[g_cls_all >= 0] if m.exclusions == "dets" else gtab.cls
    num_gt = np.bincount(counted, minlength=len(ids))
    scored = num_gt > 0
    if m.classes == "gt+det":
        scored &= np.bincount(p_cls, minlength=len(ids)) > 0
    result = _summarise(labelmap, p_cls, rank_score, tp, num_gt, scored)
    result.metrics.update(_gt_counts(gt, g_rows, g_frame[g_rows]))
    return result


def _gt_counts(gt: Table, rows: np.ndarray, frame: np.ndarray) -> dict[str, int]:
    """``keyframes``: the GT keyframes scored (a box of a label-map class, not excluded);
    ``boxes``: the distinct GT person boxes on them (metrics.json)."""
    key = np.column_stack([frame.astype(np.float64),
                           *(_num(gt[c], np.float64)[rows] for c in ("x1", "y1", "x2", "y2"))])
    return {"keyframes": int(len(np.unique(frame))),
            "boxes": int(len(np.unique(key, axis=0))) if len(key) else 0}


def _num(col, dtype=None) -> np.ndarray:
    """A numeric column (numpy array or pandas Series) as a numpy array (no copy if it is
    one of ``dtype`` already)."""
    return np.asarray(col, dtype=dtype)


def _take(col, rows: np.ndarray):
    """Rows ``rows`` of a column (Codes, pandas Series or numpy array)."""
    if isinstance(col, Codes):
        return Codes(col.codes[rows], col.categories)
    return col.iloc[rows] if hasattr(col, "iloc") else np.asarray(col)[rows]


def _is_int(col) -> bool:
    dtype = None if isinstance(col, Codes) else getattr(col, "dtype", None)
    return isinstance(dtype, np.dtype) and dtype.kind in "iu"


def _int_stamps(col) -> np.ndarray:
    """Integer seconds; strings such as ``'0902'`` are parsed, a fraction is a ValueError."""
    if _is_int(col):
        return _num(col, np.int64)
    codes, uniq = _video_codes(col)
    try:
        values = np.array([_int_stamp(u) for u in uniq], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{err} (fractional timestamps are read with --mode official-2020)"
                         ) from None
    return values[codes] if len(uniq) else np.zeros(len(col), dtype=np.int64)


def _int_stamp(v) -> int:
    if isinstance(v, str):
        t = v.strip()
        if not t.lstrip("+-").isdigit():
            raise ValueError(f"timestamp '{v}' is not an integer")
        return int(t)
    if float(v) != int(v):
        raise ValueError(f"timestamp '{v}' is not an integer")
    return int(v)


def _decimal_stamps(col) -> np.ndarray:
    """Microseconds of the official 2020 key ``'%.6f' % decimal.Decimal(timestamp)``."""
    if _is_int(col):
        return _num(col, np.int64) * 1_000_000
    codes, uniq = _video_codes(col)
    values = np.array([_decimal_stamp(u) for u in uniq], dtype=np.int64)
    return values[codes] if len(uniq) else np.zeros(len(col), dtype=np.int64)


def _decimal_stamp(v) -> int:
    import decimal

    try:
        # the official expression: %-formatting goes through float, format() would not
        key = "%.6f" % decimal.Decimal(v if isinstance(v, str) else repr(float(v)))  # noqa: UP031
    except (decimal.InvalidOperation, ValueError, TypeError):
        raise ValueError(f"timestamp '{v}' is not a decimal number") from None
    whole, _, frac = key.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 1_000_000 + int(frac))


def _subset(mask: np.ndarray) -> np.ndarray | slice:
    """Indices where ``mask`` holds, or ``slice(None)`` when it holds everywhere."""
    return slice(None) if mask.all() else np.flatnonzero(mask)


def score_files(predictions: str | os.PathLike, annotations: str | os.PathLike,
                labelmap: str | os.PathLike | LabelMap,
                excluded: str | os.PathLike | None = None,
                mode: str | EvalMode = DEFAULT_MODE,
                action_thr: float | None = None) -> EvalResult:
    """Read the files and compute :func:`frame_map` under ``mode`` (nothing is written).

    Bad inputs raise :class:`pipeline.artifacts.ArtifactError` naming the file (and line).
    """
    m = check_mode(mode, excluded)
    lm = labelmap if isinstance(labelmap, LabelMap) else read_labelmap(labelmap)
    inputs = read_inputs(predictions, annotations, excluded, m.timestamps == "decimal")
    return score_inputs(inputs, lm, m, predictions, annotations, excluded, action_thr)


def score_inputs(inputs: tuple, lm: LabelMap, mode: EvalMode,
                 predictions: str | os.PathLike, annotations: str | os.PathLike,
                 excluded: str | os.PathLike | None = None,
                 action_thr: float | None = None) -> EvalResult:
    """:func:`frame_map` of :func:`read_inputs`'s ``inputs`` (a caller that checks them
    first reads the files once); a timestamp the mode cannot read names its file."""
    try:
        gt, pred, ex, gt_frames = inputs
        return frame_map(gt, pred, lm, ex, mode, gt_frames, action_thr)
    except ValueError as err:
        raise ArtifactError(_culprit(inputs, predictions, annotations, excluded, mode),
                            str(err)) from None


def read_inputs(predictions: str | os.PathLike, annotations: str | os.PathLike,
                excluded: str | os.PathLike | None = None, decimal: bool = False
                ) -> tuple[Table, Table, Table | None, Table | None]:
    """``(gt, pred, excluded, gt_frames)`` as :func:`frame_map` takes them.

    Integer timestamps as the artifact readers read them, or (``decimal``) timestamps kept
    as strings, and ground truth with 2-column ``video_id,timestamp`` rows (empty
    keyframes, returned as ``gt_frames``), as the official 2020 reader accepts.
    Integer timestamps give dicts of numpy columns (no pandas), decimal ones DataFrames.
    """
    ex = read_columns(excluded, ann.EXCLUDED_SCHEMA) if excluded is not None else None
    if decimal:
        gt, gt_frames = _read_decimal(annotations, ann.SCHEMA, "person_id")
        pred, _ = _read_decimal(predictions, pred_artifact.SCHEMA, "score", categorical=True)
    else:
        try:
            gt = read_annotation_columns(annotations)
            pred = read_prediction_columns(predictions)
        except ArtifactError as err:
            if "column 'timestamp' must be an integer" in str(err):
                raise ArtifactError(err.path, f"{err.problem} (fractional timestamps are read "
                                              "with --mode official-2020)", err.line) from None
            raise
        gt_frames = None
    nan = np.isnan(_num(pred["score"], np.float64))
    if nan.any():
        row = int(np.argmax(nan))
        raise ArtifactError(predictions, "score is not a number", line_of_row(predictions, row))
    return gt, pred, ex, gt_frames


def _read_decimal(path: str | os.PathLike, schema: dict[str, str], last: str,
                  categorical: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows with 7 or 8 columns (``last`` optional), and the 2-column rows apart."""
    schema = {**schema, "timestamp": "str"}
    try:
        df = read_csv(path, schema, categorical=categorical)
    except ArtifactError:  # short rows: the slow reader, which names a bad line
        df = read_csv(path, schema, min_columns=2, categorical=categorical)
    body = [c for c in schema if c not in ("video_id", "timestamp", last)]
    present = df[body].notna().to_numpy()
    partial = present.any(axis=1) & ~present.all(axis=1)
    if partial.any():
        raise ArtifactError(path, "expected 2, 7 or 8 columns",
                            line_of_row(path, int(np.argmax(partial))))
    full = present.all(axis=1)
    frames = df.loc[~full, ["video_id", "timestamp"]].reset_index(drop=True)
    df = df[full].reset_index(drop=True) if not full.all() else df
    df["action_id"] = df["action_id"].astype(np.int64)
    if last == "person_id":
        df[last] = df[last].fillna(-1).astype(np.int64)
    elif df[last].isna().any():
        raise ArtifactError(path, f"empty value in column '{last}'")
    boxes = df[["x1", "y1", "x2", "y2"]].to_numpy()
    bad = ~((boxes >= -1e-6) & (boxes <= 1 + 1e-6)).all(axis=1)
    if last == "person_id" and bad.any():
        raise ArtifactError(path, "box coordinates must be normalised to [0, 1]")
    return df, frames


def _culprit(inputs, predictions, annotations, excluded, mode: EvalMode):
    """The file whose timestamps ``mode`` cannot read."""
    stamp = _decimal_stamps if mode.timestamps == "decimal" else _int_stamps
    for df, path in zip(inputs, (annotations, predictions, excluded), strict=False):
        try:
            if df is not None:
                stamp(df["timestamp"])
        except ValueError:
            return path
    return predictions


# --------------------------------------------------------------------------- comparing modes


@dataclass
class ModeComparison:
    """mAP under every mode, and under the base mode with one switch changed at a time.

    ``maps``: mode -> mAP, or a string saying why that mode cannot score these inputs.
    ``switches``: ``(switch, value, mAP or reason)``, each the base mode with only that
    switch set to the value another mode uses.  ``notes``: how inputs were adapted.
    """

    base: str
    maps: dict[str, float | str]
    switches: list[tuple[str, str, float | str]]
    notes: list[str] = field(default_factory=list)

    def most(self) -> tuple[str, str, float] | None:
        """The switch (and value) that moves the base mode's mAP most, with the change."""
        ref = self.maps.get(self.base)
        moved = [(abs(v - ref), name, value, v - ref) for name, value, v in self.switches
                 if isinstance(v, float) and isinstance(ref, float) and v == v]
        if not moved or max(t[0] for t in moved) == 0:
            return None
        _, name, value, delta = max(moved, key=lambda t: t[0])
        return name, value, delta

    def format(self) -> str:
        ref = self.maps.get(self.base)

        def cell(v: float | str) -> tuple[str, str]:
            if not isinstance(v, float):
                return "n/a", f"({v})"
            d = f"{v - ref:+.6f}" if isinstance(ref, float) else ""
            return f"{v:.6f}", d

        lines = [f"{'mode':<16}{'mAP':>10}  {'vs ' + self.base}"]
        for mode, v in self.maps.items():
            m, d = cell(v)
            lines.append(f"{mode:<16}{m:>10}  {'' if mode == self.base else d}".rstrip())
        lines += ["", f"one switch at a time on {self.base}:",
                  f"{'switch':<17}{'value':<15}{'mAP':>10}  delta"]
        for name, value, v in self.switches:
            m, d = cell(v)
            lines.append(f"{name:<17}{value:<15}{m:>10}  {d}".rstrip())
        most = self.most()
        lines += ["", "moves it most: " + (f"{most[0]}={most[1]} ({most[2]:+.6f})" if most
                                           else "nothing (no switch changes the mAP)")]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def compare_modes(predictions: str | os.PathLike, annotations: str | os.PathLike,
                  labelmap: str | os.PathLike | LabelMap,
                  excluded: str | os.PathLike | None = None,
                  action_thr: float | None = None) -> ModeComparison:
    """Score the files under every mode of :data:`MODES` and name the switch that moves the
    mAP most (``acar eval --compare-modes``).  The files are read once per timestamp
    reading; a mode that cannot score them gets the one-line reason instead of a number.
    The 2020 tool takes no excluded-timestamps file: it is scored without it (its rule for
    frames absent from the GT then applies to the excluded frames)."""
    lm = labelmap if isinstance(labelmap, LabelMap) else read_labelmap(labelmap)
    read: dict[bool, tuple | str] = {}
    for decimal in (False, True):
        try:
            read[decimal] = read_inputs(predictions, annotations, excluded, decimal)
        except ArtifactError as err:
            read[decimal] = str(err)
    notes = []

    def run(m: EvalMode) -> float | str:
        inputs = read[m.timestamps == "decimal"]
        if isinstance(inputs, str):
            return inputs
        gt, pred, ex, gt_frames = inputs
        if m.exclusions == "none":
            ex = None
        try:
            return float(frame_map(gt, pred, lm, ex, m, gt_frames, action_thr).metrics["mAP"])
        except ValueError as err:
            return str(err)

    maps = {name: run(m) for name, m in MODES.items()}
    if excluded is not None:
        notes.append("official-2020 scored without the excluded-timestamps file, which that "
                     "tool does not take")
    base = DEFAULT_MODE if isinstance(maps[DEFAULT_MODE], float) else "official-2020"
    switches = []
    for name in SWITCH_DOC:
        mine = getattr(MODES[base], name)
        for value in dict.fromkeys(getattr(m, name) for m in MODES.values()):
            if value != mine:
                variant = replace(MODES[base], **{name: value})
                switches.append((name, _show(value), run(variant)))
    return ModeComparison(base, maps, switches, notes)


# --------------------------------------------------------------------------- frames


def _class_index(action_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each action id in the label map, -1 when it is not there."""
    action_ids = np.asarray(action_ids, dtype=np.int64)
    if not len(ids):
        return np.full(len(action_ids), -1, dtype=np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo < 1 << 20:  # small ids (AVA: 1..80): a lookup table, -1 at both ends
        table = np.full(hi - lo + 3, -1, dtype=np.int64)
        table[ids - lo + 1] = np.arange(len(ids))
        return np.take(table, action_ids - (lo - 1), mode="clip")  # out of range: an end
    order = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids[order], action_ids), len(ids) - 1)
    return np.where(ids[order][pos] == action_ids, order[pos], -1).astype(np.int64)


def _video_codes(col) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)`` of a column: Codes, a pandas Series (Categorical or not) or an
    array."""
    if isinstance(col, Codes):
        return np.asarray(col.codes), col.categories
    if hasattr(col, "cat"):  # a pandas Categorical
        return col.cat.codes.to_numpy(), np.asarray(col.cat.categories, dtype=object)
    codes, uniques = _factorize(col)
    return codes, np.asarray(uniques, dtype=object)


def string_codes(col) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, distinct values)`` of a string column of any :data:`Table`."""
    return _video_codes(col)


def is_int_column(col) -> bool:
    """Whether a column of any :data:`Table` holds integers."""
    return _is_int(col)


def _factorize(values) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)``, uniques in order of first appearance (``pd.factorize``).
    pandas' hash table when pandas is loaded (its objects are the input), else numpy."""
    pd = sys.modules.get("pandas")
    if pd is not None:
        codes, uniques = pd.factorize(values, sort=False)
        return codes, np.asarray(uniques)
    arr = np.asarray(values)
    if not len(arr):
        return np.zeros(0, dtype=np.int64), arr
    uniq, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], uniq[order]


def _frame_codes(tables: Sequence[tuple[Any, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Dense frame ids shared by all ``(video_id, timestamp)`` tables, numbered in order of
    first appearance (first table first).  Returns one code array per table, then the count."""
    codes, uniques = zip(*(_video_codes(v) for v, _ in tables), strict=True)
    union, _ = _factorize(np.concatenate(uniques))
    bounds = np.cumsum([0] + [len(u) for u in uniques])
    maps = [union[bounds[i]:bounds[i + 1]].astype(np.int64) for i in range(len(tables))]
    stamps = [np.asarray(t, dtype=np.int64) for _, t in tables]
    lo = min((int(t.min()) for t in stamps if len(t)), default=0)
    hi = max((int(t.max()) for t in stamps if len(t)), default=0)
    span = hi - lo + 1
    if span * max(len(union), 1) >= 1 << 62:  # huge timestamps: densify them first
        t_codes, t_uniq = _factorize(np.concatenate(stamps))
        stamps = np.split(t_codes.astype(np.int64), np.cumsum([len(t) for t in stamps])[:-1])
        lo, span = 0, max(len(t_uniq), 1)

    out: list[np.ndarray] = []
    index = np.zeros(0, dtype=np.int64)  # frame key of each frame id
    for code, vmap, ts in zip(codes, maps, stamps, strict=True):
        if not len(ts):
            out.append(np.zeros(0, dtype=np.int64))
            continue
        # Files come grouped by frame: work on runs of equal (video, timestamp) only.
        head = np.flatnonzero(np.concatenate(
            [[True], (code[1:] != code[:-1]) | (ts[1:] != ts[:-1])]))
        key = vmap[code[head]] * span + (ts[head] - lo)
        head_code = _lookup(index, key)
        new = head_code < 0
        if new.any():
            extra, extra_uniq = _factorize(key[new])
            head_code[new] = extra + len(index)
            index = np.concatenate([index, extra_uniq.astype(np.int64)])
        out.append(np.repeat(head_code, np.diff(np.append(head, len(ts)))))
    return (*out, len(index))


def _lookup(index: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Position of each ``key`` in the (unsorted, distinct) ``index``, -1 when absent."""
    if not len(index):
        return np.full(len(key), -1, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    pos = np.minimum(np.searchsorted(index[order], key), len(index) - 1)
    return np.where(index[order][pos] == key, order[pos], -1).astype(np.int64)


def _group_order(frames: np.ndarray, n_frames: int) -> np.ndarray | slice:
    """Stable order that groups rows by (ascending) frame id; a no-op for grouped files."""
    if len(frames) < 2 or bool(np.all(frames[1:] >= frames[:-1])):
        return slice(None)
    if n_frames <= 1 << 16:  # numpy's stable sort is a radix sort for 16-bit keys
        return np.argsort(frames.astype(np.uint16), kind="stable")
    order = np.argsort((frames & 0xFFFF).astype(np.uint16), kind="stable")
    high = frames[order] >> 16
    if n_frames <= 1 << 32:
        return order[np.argsort(high.astype(np.uint16), kind="stable")]
    return order[np.argsort(high, kind="stable")]  # pragma: no cover - > 4e9 frames


def _boxes(df: Table, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Boxes of ``rows`` as float64 arrays ``y1, x1, y2, x2`` (the official layout)."""
    return tuple(_num(df[c], np.float64)[rows] for c in ("y1", "x1", "y2", "x2"))


def _padded_rows(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, width: int,
                 fill: float) -> np.ndarray:
    """``[len(starts), width]`` matrix: row i holds ``values[starts[i]:starts[i]+counts[i]]``
    then ``fill``.  Rows are contiguous slices, so this is a gather of whole windows."""
    n = len(values)
    out = np.empty((len(starts), width))
    safe = starts + width <= n
    if n >= width:
        out[safe] = sliding_window_view(values, width)[starts[safe]]
    if not safe.all():
        base = max(0, n - 2 * width)
        tail = np.concatenate([values[base:], np.full(width, fill)])
        out[~safe] = sliding_window_view(tail, width)[starts[~safe] - base]
    out[np.arange(width) >= counts[:, None]] = fill
    return out


# --------------------------------------------------------------------------- top-50 cap


def _cap_mask(frame: np.ndarray, score: np.ndarray, tuple_keys: Callable[[np.ndarray], list],
              n_frames: int, capacity: int = CAPACITY) -> np.ndarray:
    """Rows that survive the official per-frame heap of ``capacity`` entries.

    ``frame`` must be grouped ascending with file order kept inside a frame.
    ``tuple_keys(idx)`` gives, for rows ``idx``, the lexsort keys (least significant first)
    ``row, x2, y2, x1, y1, action_id``, ``row`` being the position in the file.

    Derivation: let s* be the frame's capacity-th best score.  Rows below s* never survive,
    rows above it always do.  Only rows scoring >= s* matter for what happens to the rows
    scoring exactly s* (the ties): the heap's score multiset is always the top of the prefix
    read so far, so, counting rows scoring >= s* in file order, a tie enters the heap iff fewer
    than ``capacity`` such rows came before it, and each row scoring above s* that comes after
    ``capacity`` such rows evicts the smallest tuple, which is then a tie.  As all entries
    precede all evictions, the surviving ties are the ``m`` largest ``(action_id, y1, x1, y2,
    x2)`` tuples among the ties within the first ``capacity`` rows scoring >= s*, where ``m`` is
    ``capacity`` minus the number of rows above s*.  Of equal tuples (identical rows, which
    the official code cannot tell apart) the later ones are kept.
    """
    counts = np.bincount(frame, minlength=n_frames)
    big = np.flatnonzero(counts > capacity)
    if not len(big):
        return np.ones(len(frame), dtype=bool)
    starts = np.cumsum(counts) - counts
    s_star = np.full(n_frames, -np.inf)  # the capacity-th best score of each big frame
    n_above = np.zeros(n_frames, dtype=np.int64)
    n_tie = np.zeros(n_frames, dtype=np.int64)
    low, width = capacity, 1 << int(capacity).bit_length()
    while low < counts[big].max():  # frames bucketed by size: a padded matrix per bucket
        sel = big[(counts[big] > low) & (counts[big] <= width)]
        if len(sel):
            mat = _padded_rows(score, starts[sel], counts[sel], width, -np.inf)
            kth = np.partition(mat, width - capacity, axis=1)[:, width - capacity]
            s_star[sel] = kth
            n_above[sel] = np.count_nonzero(mat > kth[:, None], axis=1)
            n_tie[sel] = np.count_nonzero(mat == kth[:, None], axis=1) - np.where(
                kth == -np.inf, width - counts[sel], 0)  # padding is -inf too
        low, width = width, width * 2

    keep = score >= s_star[frame]  # small frames: s* = -inf
    slots = capacity - n_above
    ambiguous = np.flatnonzero(n_tie > slots)
    if not len(ambiguous):
        return keep

    # Ties crossing the boundary: among the first `capacity` rows scoring >= s* (file order)
    # of each such frame, the ties with the largest tuples survive.
    n = counts[ambiguous]
    idx = np.repeat(starts[ambiguous] - np.cumsum(n) + n, n) + np.arange(n.sum())
    idx = idx[keep[idx]]
    f = frame[idx]
    rank = np.arange(len(idx)) - np.searchsorted(f, f)
    tie = score[idx] == s_star[f]
    keep[idx[tie]] = False
    cand = idx[tie & (rank < capacity)]
    cand = cand[np.lexsort((*tuple_keys(cand), frame[cand]))]
    fc = frame[cand]
    from_end = np.searchsorted(fc, fc, side="right") - 1 - np.arange(len(cand))
    keep[cand[from_end < slots[fc]]] = True
    return keep


# --------------------------------------------------------------------------- matching


class _GroundTruth:
    """GT rows sorted by (frame, class, official order inside the frame), with a lookup from
    (frame, class) to the run of GT rows holding them."""

    def __init__(self, gt: Table, rows: np.ndarray, frame: np.ndarray, cls: np.ndarray,
                 n_classes: int, n_frames: int, order: str = "heap", float32: bool = False):
        self.n_classes, self.n_frames = max(n_classes, 1), n_frames
        self._rows, self._frame, self._cls = rows, frame, cls
        pid = _num(gt["person_id"], np.float64)[rows] if "person_id" in gt else \
            np.full(len(rows), -1.0)
        self._pid = np.where(np.isnan(pid), -1.0, pid)
        if order == "file":  # person ids play no part: file order inside a frame
            self._pid = np.zeros(len(rows))
        self._boxes = np.stack(_boxes(gt, rows), axis=1)
        if float32:
            self._boxes = self._boxes.astype(np.float32)
        self._rank = np.arange(len(rows), dtype=np.int64)  # file order inside a frame
        self._sort()

    def _sort(self) -> None:
        order = np.lexsort((self._rank, -self._pid, self._cls, self._frame))
        self.cls, self.pid, boxes = self._cls[order], self._pid[order], self._boxes[order]
        self.boxes = tuple(boxes[:, i] for i in range(4))  # y1, x1, y2, x2
        self.area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        key, self.start, self.count = np.unique(
            self._frame[order] * self.n_classes + self.cls, return_index=True, return_counts=True)
        self.key = key
        size = self.n_frames * self.n_classes
        # Dense (frame, class) -> run table when it is small; sorted-key search otherwise.
        self.table = None
        if size <= max(1 << 23, 8 * len(key)):
            self.table = np.full(size, -1, dtype=np.int32 if len(key) < 1 << 31 else np.int64)
            self.table[key] = np.arange(len(key))

    def runs(self, frame: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Run index of each (frame, class), -1 when there is no GT for it."""
        key = frame * self.n_classes + cls
        if self.table is not None:
            return self.table[key]
        if not len(self.key):
            return np.full(len(key), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.key, key), len(self.key) - 1)
        return np.where(self.key[pos] == key, pos, -1)

    def use_heap_order(self, frames: np.ndarray, action: np.ndarray) -> None:
        """Order the GT of ``frames`` exactly as the official reader does, then re-sort."""
        sel = np.flatnonzero(np.isin(self._frame, frames))
        self._rank[sel] = _official_gt_rank(self._frame[sel], self._pid[sel], action[sel],
                                            self._boxes[sel])
        self._sort()


def _official_gt_rank(frame: np.ndarray, pid: np.ndarray, action: np.ndarray,
                      boxes: np.ndarray) -> np.ndarray:
    """Position of each GT row (given in file order) in the official per-frame box list.

    The official reader pushes ``(person_id, action_id, y1, x1, y2, x2)`` on a heap per frame,
    then sorts the heap *array* stably by descending first element.  Only called for the rare
    frames where that order can change a result, so a Python loop is fine here.
    """
    rank = np.empty(len(frame), dtype=np.int64)
    order = np.argsort(frame, kind="stable")
    bounds = np.flatnonzero(np.diff(frame[order])) + 1
    for idx in np.split(order, bounds):
        heap: list[tuple] = []
        for i in idx.tolist():  # the trailing index only breaks exact-tuple ties, and a
            # pushed item never moves above an equal one, so the layout is the official one
            heapq.heappush(heap, (float(pid[i]), int(action[i]), *boxes[i].tolist(), i))
        listed = sorted(heap, key=lambda t: -t[0])
        for pos, item in enumerate(listed):
            rank[item[-1]] = pos
    return rank


def _iou(pb: tuple[np.ndarray, ...], gb: tuple[np.ndarray, ...],
         garea: np.ndarray) -> np.ndarray:
    """Row-wise IoU of boxes ``y1, x1, y2, x2`` with ``np_box_ops.iou``'s operations: for
    float32 boxes, differences and areas in float32, the intersection (whose heights and
    widths are clipped against a float64 zero array there) and the rest in float64."""
    h = np.maximum(0.0, np.minimum(pb[2], gb[2]) - np.maximum(pb[0], gb[0]))
    w = np.maximum(0.0, np.minimum(pb[3], gb[3]) - np.maximum(pb[1], gb[1]))
    inter = h.astype(np.float64) * w.astype(np.float64)
    parea = (pb[2] - pb[0]) * (pb[3] - pb[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (parea + garea - inter)


def _match(frame: np.ndarray, cls: np.ndarray, score: np.ndarray,
           boxes: tuple[np.ndarray, ...], gt: _GroundTruth,
           by_score: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """True-positive flags of the predictions, and frames whose GT order could matter.
    Each frame's predictions take their GT box in descending score (``by_score``, file
    order among equal scores) or in file order."""
    tp = np.zeros(len(frame), dtype=bool)
    run = gt.runs(frame, cls)
    idx = np.flatnonzero(run >= 0)  # predictions with GT of their class in their frame
    if not len(idx):
        return tp, np.zeros(0, dtype=np.int64)
    start, count = gt.start[run[idx]], gt.count[run[idx]]
    pb = tuple(b[idx] for b in boxes)
    best = np.full(len(idx), -np.inf)
    best_g = start.copy()
    nan_hit = np.zeros(len(idx), dtype=bool)
    tie = np.zeros(len(idx), dtype=bool)
    for j in range(int(count.max())):  # j-th GT box of the run, for every prediction at once
        sub = np.flatnonzero(count > j) if j else slice(None)
        g = start[sub] + j
        iou = _iou(tuple(b[sub] for b in pb), tuple(b[g] for b in gt.boxes), gt.area[g])
        nan_hit[sub] |= np.isnan(iou)  # np.argmax takes the first NaN: never a match
        if j:  # an exact tie between different boxes of one person id: order may matter
            cur, gb = best[sub], best_g[sub]
            tie[sub] |= ((iou == cur) & (cur >= IOU_THRESHOLD) & (gt.pid[g] == gt.pid[gb])
                         & ~_same_box(gt.boxes, g, gb))
        better = iou > best[sub]
        if isinstance(sub, slice):
            best[better], best_g[better] = iou[better], g[better]
        else:
            best[sub[better]], best_g[sub[better]] = iou[better], g[better]
    hit = np.flatnonzero(~nan_hit & (best >= IOU_THRESHOLD))
    gidx, pred = best_g[hit], idx[hit]
    # The first prediction (descending score, then file order) on each GT box is the TP.
    order = np.lexsort((pred, -score[pred], gidx) if by_score else (pred, gidx))
    first = np.ones(len(order), dtype=bool)
    first[1:] = gidx[order][1:] != gidx[order][:-1]
    tp[pred[order][first]] = True
    return tp, np.unique(frame[idx[tie & ~nan_hit]])


def _same_box(boxes: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (boxes[0][a] == boxes[0][b]) & (boxes[1][a] == boxes[1][b]) & \
        (boxes[2][a] == boxes[2][b]) & (boxes[3][a] == boxes[3][b])


# --------------------------------------------------------------------------- AP


def _average_precision(tp_ranked: np.ndarray, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """VOC all-point AP exactly as ``metrics.compute_average_precision``."""
    if not len(tp_ranked):
        return 0.0, np.zeros(0), np.zeros(0)
    cum_tp = np.cumsum(tp_ranked)
    precision = cum_tp.astype(float) / np.arange(1, len(tp_ranked) + 1)
    recall = cum_tp.astype(float) / num_gt
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    i = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[i] - r[i - 1]) * p[i])), precision, recall


def _ranking(score: np.ndarray) -> np.ndarray:
    """Descending-score order; equal scores later position first (``argsort(kind="stable")``
    reversed, see the module doc).  Sorts order-preserving int64 keys (numpy's SIMD sort),
    then puts runs of equal scores back in position order."""
    bits = (score + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0
    key = bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))  # monotone in the float
    order = np.argsort(key)
    sk = key[order]
    same = sk[1:] == sk[:-1]
    if same.any():
        run = np.concatenate([[0], np.cumsum(~same)])
        t = np.flatnonzero(np.concatenate([same, [False]]) | np.concatenate([[False], same]))
        order[t] = order[t][np.argsort(run[t] * len(key) + order[t])]
    return order[::-1]


def _summarise(labelmap: LabelMap, cls: np.ndarray, score: np.ndarray, tp: np.ndarray,
               num_gt: np.ndarray, scored: np.ndarray | None = None) -> EvalResult:
    """Per-class AP of the ``scored`` classes (default: those with GT), the others null."""
    scored = num_gt > 0 if scored is None else scored
    n = len(labelmap.ids)
    order = np.argsort(cls.astype(np.uint16) if n <= 1 << 16 else cls, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cls, minlength=n))])
    result = EvalResult(metrics={})
    aps = np.full(n, np.nan)
    for c in np.flatnonzero(scored):
        seg = order[bounds[c]:bounds[c + 1]]
        ranked = _ranking(score[seg])
        aps[c], prec, rec = _average_precision(tp[seg][ranked], int(num_gt[c]))
        a = labelmap.ids[c]
        result.precision[a], result.recall[a] = prec, rec
    for c, a in enumerate(labelmap.ids):
        result.num_gt[a] = int(num_gt[c])
    per_super: dict[str, float | None] = {}
    for sup in dict.fromkeys(s for s in labelmap.superclasses if s):
        vals = [aps[c] for c in range(n) if labelmap.superclasses[c] == sup and scored[c]]
        per_super[sup] = float(np.mean(vals)) if vals else None
    result.metrics = {
        "mAP": _nanmean_by_id(labelmap.ids, aps),
        "per_class": {str(a): {"name": labelmap.names[c],
                               "ap": None if np.isnan(aps[c]) else float(aps[c]),
                               "num_gt": int(num_gt[c])}
                      for c, a in enumerate(labelmap.ids)},
        "per_superclass": per_super,
    }
    return result


def _nanmean_by_id(ids: Sequence[int], aps: np.ndarray) -> float:
    """``np.nanmean`` over an array indexed by ``id - 1``, as the official code lays it out
    (same summation order, so the same last bits)."""
    if not np.any(~np.isnan(aps)):
        return float("nan")
    ids_arr = np.asarray(ids, dtype=np.int64)
    if ids_arr.min() < 1 or ids_arr.max() > 1 << 20:
        return float(np.nanmean(aps[np.argsort(ids_arr, kind="stable")]))
    full = np.full(int(ids_arr.max()), np.nan)
    full[ids_arr - 1] = aps
    return float(np.nanmean(full))
