"""Stage ``eval``: run a trained head on cached features, write AVA predictions, score them.

Inference uses the detections with score >= ``det_score_thr`` on every keyframe of the
videos in the annotation CSV (:mod:`pipeline.inference`, imported only when a model is
run: scoring a result file needs neither torch nor the heads).  Scoring is
:mod:`pipeline.ava_eval` (the official AVA frame-mAP, a pure function); this stage writes
what it computes: ``metrics.json`` (the summary), ``per_class.json`` beside it (every
class's AP: :mod:`pipeline.artifacts.metrics`) and the plots (:mod:`pipeline.eval_plots`).

With a model, the predictions go to ``predictions.csv`` (the AVA result format) and, with
each score's raw logit, to the prediction table ``predictions.parquet`` beside it
(:mod:`pipeline.artifacts.predictions`; what ``acar ensemble`` reads).

Nothing is half-written: with a model, the predictions, the plots and ``metrics.json`` are
written to temporary files beside their targets and renamed into place only after all of
them succeeded (the old ``metrics.json`` first removed), so a failure never leaves a new
``predictions.csv`` beside an old ``metrics.json``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.atomic import atomic_path
from .artifacts.csvio import line_of_row
from .artifacts.labelmap import read_labelmap
from .artifacts.metrics import per_class_path, write_metrics
from .artifacts.predictions import COLUMNS as PRED_COLUMNS
from .artifacts.predictions import (
    check_values,
    read_prediction_table,
    read_predictions,
    table_path,
    write_prediction_table,
    write_predictions,
)
from .ava_eval import (
    DEFAULT_MODE,
    EvalResult,
    Table,
    check_mode,
    is_int_column,
    read_inputs,
    score_files,
    score_inputs,
    string_codes,
)
from .eval_plots import PLOT_FILES, write_plots
from .inference_config import PredictConfig
from .shards import shard_items


@dataclass
class EvalConfig(PredictConfig):
    """The eval stage's parameters (``stages.yaml eval``): those of prediction."""


def run(cfg: EvalConfig, model: str | os.PathLike, features: str, detections: str | os.PathLike,
        annotations: str | os.PathLike, labelmap: str | os.PathLike, out: str | os.PathLike,
        predictions_out: str | os.PathLike | None = None,
        excluded: str | os.PathLike | None = None,
        plots_dir: str | os.PathLike | None = None, shard: tuple[int, int] = (0, 1),
        bank: str | None = None, mode: str = DEFAULT_MODE,
        action_thr: float | None = None) -> dict:
    """Predict on the videos of ``annotations``, write predictions and ``metrics.json``.

    ``bank``: the bank store a bank head reads (the checkpoint's ``bank`` says which kind).
    With ``shard=(i, N)``, N > 1, only every N-th video (from the i-th) is predicted and
    only the predictions are written (no metrics): merge the parts with
    :func:`merge_predictions`, then :func:`score` them.  ``mode``, ``action_thr``: how
    to score (:data:`pipeline.ava_eval.MODES`).
    """
    check_mode(mode, excluded)  # a bad mode fails before the model runs
    check_action_thr(action_thr)
    from .artifacts.checkpoint import load_checkpoint
    from .artifacts.detections import read_detections
    from .artifacts.features import FeatureStore
    from .bank_reader import open_bank
    from .inference import load_head, predict

    ckpt = load_checkpoint(model)
    lm = read_labelmap(labelmap)
    if list(lm.ids) != list(ckpt["labelmap"]["ids"]):
        raise ArtifactError(labelmap, f"label map differs from the one {model} was trained on")
    head = load_head(ckpt, model)
    store = FeatureStore(features)
    dets, _ = read_detections(detections)
    gt = read_annotations(annotations)
    videos = sorted(set(gt["video_id"]) & set(store.videos()))
    if not videos:
        raise ArtifactError(annotations, f"none of its videos are in the feature store {features}")
    views = store.spec(videos[0]).views
    banks = open_bank(bank, head, store.spec(videos[0]).to_dict(), cfg.in_memory)
    pred = predict(head, lm, store, dets, shard_items(videos, shard), cfg, list(views), banks)
    if pred.empty and shard[1] == 1:
        raise ArtifactError(detections, "no detection scores >= eval.det_score_thr "
                            f"({cfg.det_score_thr}) on a keyframe of the evaluated videos "
                            "in the feature store: nothing to predict")
    pred_path = predictions_out or os.path.join(os.path.dirname(str(out)) or ".",
                                                "predictions.csv")
    meta = {"source": "eval", "head": ckpt["head"], "model": str(model)}
    if shard[1] > 1:
        with atomic_path(table_path(pred_path)) as tmp_table:
            write_prediction_table(pred, tmp_table, meta)
            write_predictions(pred, pred_path)
        return {}
    with ExitStack() as stack:  # renamed into place on leaving, the last entered first
        tmp_out = stack.enter_context(atomic_path(out))
        tmp_classes = stack.enter_context(atomic_path(per_class_path(out)))
        tmp_plots = {name: stack.enter_context(atomic_path(Path(plots_dir) / name))
                     for name in PLOT_FILES} if plots_dir is not None else None
        tmp_pred = stack.enter_context(atomic_path(pred_path))
        tmp_table = stack.enter_context(atomic_path(table_path(pred_path)))
        write_predictions(pred, tmp_pred)
        write_prediction_table(pred, tmp_table, meta)     # the same rows, with their logits
        # scores the file as written
        result = scored(score_files(tmp_pred, annotations, lm, excluded, mode, action_thr),
                        annotations)
        if tmp_plots is not None:
            write_plots(result, lm, tmp_plots, head=ckpt["head"])
        write_metrics(result.metrics, tmp_out, tmp_classes)
        Path(out).unlink(missing_ok=True)  # no old metrics beside the new predictions
    return result.metrics


REAL_DETECTOR_THR = "0.3-0.7"     # the det_score_thr range real person detectors need


def det_score_check(detections: str | os.PathLike, thr: float, stage: str,
                    strict: bool = False, videos: Collection[str] | None = None) -> str | None:
    """A one-line warning when ``thr`` (det_score_thr) keeps fewer than half of the
    detections (of ``videos``, if given), else None; with ``strict``, an
    :class:`ArtifactError` naming ``detections`` instead.  The synthetic world's boxes score
    1.0, so its thresholds (0.85-0.9) drop every box of a real detector, silently."""
    from .artifacts.detections import read_detections

    dets, _ = read_detections(detections)
    if videos is not None:
        dets = dets[dets["video_id"].isin(list(videos))]
    total, kept = len(dets), int((dets["score"] >= thr).sum())
    if total == 0 or 2 * kept >= total:
        return None
    msg = (f"{stage}: {kept} of {total} detections score >= {thr:g} (det_score_thr); real "
           f"detectors usually need {REAL_DETECTOR_THR}: set --det-score-thr or "
           f"det_score_thr in the params file")
    if strict:
        raise ArtifactError(detections, f"{msg} (--strict)")
    return msg


def merge_predictions(parts: list[str | os.PathLike], out: str | os.PathLike) -> None:
    """Concatenate prediction CSVs (e.g. inference shards) into one, deterministically:
    rows ordered by (video_id, timestamp), each keyframe's rows in their part's order.
    When every part has its prediction table beside it, the tables are merged the same
    way (beside ``out``)."""
    import pandas as pd  # here only: scoring a file imports no pandas

    frames = [read_predictions(p) for p in parts]
    seen: dict[tuple, str | os.PathLike] = {}
    for part, df in zip(parts, frames, strict=True):  # a part given twice doubles its rows
        keys = set(zip(df["video_id"], df["timestamp"], strict=True))
        for key in keys:
            if key in seen:
                raise ArtifactError(part, f"keyframe {key[0]}@{key[1]} is also in {seen[key]}: "
                                          "each keyframe's predictions belong to one part")
        seen.update(dict.fromkeys(keys, part))
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: [] for c in PRED_COLUMNS})
    merged = merged.sort_values(["video_id", "timestamp"], kind="stable")
    tables = [table_path(p) for p in parts]
    if parts and all(t.is_file() for t in tables):   # the parts' logits too (sharded eval)
        read = [read_prediction_table(t) for t in tables]
        for t, (df, _), part in zip(tables, read, frames, strict=True):
            if len(df) != len(part):
                raise ArtifactError(t, f"{len(df)} rows, but {len(part)} in the predictions "
                                       "CSV beside it (a stale table?)")
        rows = pd.concat([df for df, _ in read], ignore_index=True).loc[merged.index]
        with atomic_path(table_path(out)) as tmp:
            write_prediction_table(rows, tmp, {**read[0][1], "merged": len(parts)})
            write_predictions(merged, out)
        return
    write_predictions(merged, out)


def scored(result: EvalResult, annotations: str | os.PathLike) -> EvalResult:
    """``result``, unless nothing was scored: annotations without one box of a label-map
    class (outside the excluded frames) give no mAP, an error rather than ``mAP nan``."""
    if not any(n > 0 for n in result.num_gt.values()):
        raise ArtifactError(annotations, "no ground-truth box of a label-map class (outside "
                                         "the excluded timestamps): nothing to score")
    return result


def check_action_thr(action_thr: float | None) -> None:
    """``--action-thr`` is None or a score in [0, 1] (NaN would drop every prediction)."""
    if action_thr is not None and not 0.0 <= action_thr <= 1.0:
        raise ArtifactError("--action-thr", f"must be a score in [0, 1], got {action_thr}")


def check_predictions(pred: Table, gt: Table, label_ids: tuple[int, ...],
                      path: str | os.PathLike) -> None:
    """A result file fit to be scored against ``gt``, else one :class:`ArtifactError`
    naming ``path`` (and the line): rows; finite scores in [0, 1]; finite boxes inside
    [0, 1] (pixel boxes would score 0 in silence); no row twice (same keyframe, box and
    class: a part merged twice); and something that can match: a video and keyframe of
    the ground truth, an action id of the label map.  ``pred``/``gt``: DataFrames or dicts
    of numpy columns (:func:`pipeline.ava_eval.read_inputs`)."""
    if not len(pred["score"]):
        raise ArtifactError(path, "no prediction rows: nothing to score")
    check_values(pred, path)
    row = duplicate_row(pred)
    if row is not None:
        raise ArtifactError(path, "duplicate row (same keyframe, box and action_id as an "
                                  "earlier row)", line_of_row(path, row))
    codes, names = string_codes(pred["video_id"])
    gt_codes, gt_names = string_codes(gt["video_id"])
    videos = {str(n) for n in names[_present(codes, len(names))]}
    gt_videos = {str(n) for n in gt_names[_present(gt_codes, len(gt_names))]}
    if gt_videos and not videos & gt_videos:
        raise ArtifactError(path, f"none of its {len(videos)} videos is in the annotations "
                                  f"(e.g. {sorted(videos)[0]!r}; annotations: "
                                  f"{sorted(gt_videos)[0]!r}, ...)")
    if is_int_column(pred["timestamp"]) and is_int_column(gt["timestamp"]) and gt_videos \
            and not _shares_a_keyframe(codes, names, pred["timestamp"], gt_codes, gt_names,
                                       gt["timestamp"]):
        raise ArtifactError(path, "none of its keyframes (video_id, timestamp) is in the "
                                  "annotations (timestamps in another unit or offset?)")
    if not _any_in(np.asarray(pred["action_id"]), list(label_ids)):
        raise ArtifactError(path, "none of its action ids is in the label map (ids "
                                  f"{', '.join(map(str, label_ids[:5]))}...)")


def _shares_a_keyframe(codes: np.ndarray, names: np.ndarray, stamps, gt_codes: np.ndarray,
                       gt_names: np.ndarray, gt_stamps, chunk: int = 1 << 20) -> bool:
    """Whether some (video, timestamp) of the predictions is one of the ground truth's: the
    keyframes as int64 keys (the video's code in the ground truth, then the second), the
    predictions looked up a chunk at a time (the first chunk usually answers)."""
    gt_ts = np.asarray(gt_stamps, np.int64)
    span = int(gt_ts.max()) + 2 if len(gt_ts) else 1      # a key per (video, second)
    keys = np.unique(gt_codes.astype(np.int64) * span + np.clip(gt_ts, -1, span - 2))
    index = {str(n): i for i, n in enumerate(gt_names)}
    to_gt = np.array([index.get(str(n), -1) for n in names], dtype=np.int64)  # pred -> gt
    ts = np.asarray(stamps, np.int64)
    for start in range(0, len(codes), chunk):
        v = to_gt[codes[start:start + chunk]]
        t = ts[start:start + chunk]
        ok = (v >= 0) & (t >= 0) & (t < span - 1)
        if np.isin(v[ok] * span + t[ok], keys).any():
            return True
    return False


def _present(codes: np.ndarray, n: int) -> np.ndarray:
    """``[n]`` bool: which codes occur (``np.bincount`` would copy int32 codes to int64)."""
    seen = np.zeros(n, dtype=bool)
    seen[codes] = True
    return seen


def _any_in(values: np.ndarray, allowed: list, chunk: int = 1 << 20) -> bool:
    """Whether some value is in ``allowed``, a chunk at a time (the first usually answers)."""
    return any(np.isin(values[i:i + chunk], allowed).any() for i in range(0, len(values), chunk))


def duplicate_row(pred: Table) -> int | None:
    """The first row that repeats an earlier row's keyframe, box and action_id, or None.

    Result files list each box's classes in one run of rows, in ascending action_id (ours,
    SlowFast's, mmaction2's): then no row repeats when, in every run of equal (keyframe,
    box), the action ids rise, and no two runs share a keyframe and box, which is checked
    on one row per run (8.6M rows: 0.1 s, against 1.0 s for hashing every row).  Any other
    file is checked row by row (:func:`_first_repeat`)."""
    stamps = pred["timestamp"]
    cols = [string_codes(pred["video_id"])[0],
            np.asarray(stamps, np.int64) if is_int_column(stamps)
            else string_codes(stamps)[0],                     # decimal-mode (strings)
            *(np.asarray(pred[c], np.float64) for c in ("x1", "y1", "x2", "y2")),
            np.asarray(pred["action_id"], np.int64)]
    if len(cols[0]) < 2:
        return None
    new_run = np.zeros(len(cols[0]) - 1, dtype=bool)          # row i+1 starts a run
    for c in cols[:-1]:
        new_run |= c[1:] != c[:-1]
    action = cols[-1]
    if (new_run | (action[1:] > action[:-1])).all():
        heads = np.flatnonzero(np.concatenate([[True], new_run]))
        if _first_repeat([c[heads] for c in cols[:-1]]) is None:
            return None
    return _first_repeat(cols)


def _first_repeat(cols: list[np.ndarray]) -> int | None:
    """The first row of ``cols`` (equal-length columns) equal to an earlier row, or None.

    One 64-bit hash per row, sorted (1M rows, side by side on the loaded shared machine:
    0.7 to 1.2 s, pandas' ``duplicated`` over the 7 columns 1.9 to 2.2 s); rows with equal
    hashes are compared exactly."""
    cols = [c.astype(np.int64) if c.dtype.kind in "iu" else c for c in cols]
    h = np.zeros(len(cols[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in cols:
            h = (h ^ np.ascontiguousarray(c).view(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
    sorted_h = np.sort(h)
    if not (sorted_h[1:] == sorted_h[:-1]).any():     # the usual case: no equal hashes
        return None
    order = np.argsort(h, kind="stable")
    pairs = np.flatnonzero(h[order][1:] == h[order][:-1])
    later = [int(order[i + 1]) for i in pairs
             if all(c[order[i]] == c[order[i + 1]] for c in cols)]
    return min(later) if later else None


def score(predictions: str | os.PathLike, annotations: str | os.PathLike,
          labelmap: str | os.PathLike, excluded: str | os.PathLike | None,
          out: str | os.PathLike, plots_dir: str | os.PathLike | None = None,
          mode: str = DEFAULT_MODE, action_thr: float | None = None) -> dict:
    """Score any AVA result file (ours, SlowFast's, mmaction2's) -> ``metrics.json`` (and
    the plots under ``plots_dir``), as ``mode`` scores; returns the metrics dict."""
    lm = read_labelmap(labelmap)
    check_action_thr(action_thr)
    m = check_mode(mode, excluded)
    inputs = read_inputs(predictions, annotations, excluded, m.timestamps == "decimal")
    check_predictions(inputs[1], inputs[0], lm.ids, predictions)          # (pred, gt)
    result = scored(score_inputs(inputs, lm, m, predictions, annotations, excluded,
                                 action_thr), annotations)
    if plots_dir is not None:
        write_plots(result, lm, {name: Path(plots_dir) / name for name in PLOT_FILES})
    write_metrics(result.metrics, out)
    return result.metrics


__all__ = ["EvalConfig", "check_action_thr", "check_predictions", "det_score_check",
           "merge_predictions", "run", "score"]
