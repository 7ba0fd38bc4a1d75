"""Stage ``eval``: run a trained head on cached features, write AVA predictions, score them.

Inference uses the detections with score >= ``det_threshold`` on every keyframe of the
videos in the annotation CSV (:mod:`pipeline.inference`, imported only when a model is
run: scoring a result file needs neither torch nor the heads).  Scoring is
:mod:`pipeline.ava_eval` (the official AVA frame-mAP, a pure function); this stage writes
what it computes: ``metrics.json`` and the plots (:mod:`pipeline.eval_plots`).

Nothing is half-written: with a model, the predictions, the plots and ``metrics.json`` are
written to temporary files beside their targets and renamed into place only after all of
them succeeded (the old ``metrics.json`` first removed), so a failure never leaves a new
``predictions.csv`` beside an old ``metrics.json``.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.atomic import atomic_path
from .artifacts.labelmap import read_labelmap
from .artifacts.metrics import write_metrics
from .artifacts.predictions import COLUMNS as PRED_COLUMNS
from .artifacts.predictions import read_predictions, write_predictions
from .ava_eval import DEFAULT_MODE, EvalResult, check_mode, score_files
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
    pred_path = predictions_out or os.path.join(os.path.dirname(str(out)) or ".",
                                                "predictions.csv")
    if shard[1] > 1:
        write_predictions(pred, pred_path)
        return {}
    with ExitStack() as stack:  # renamed into place on leaving, the last entered first
        tmp_out = stack.enter_context(atomic_path(out))
        tmp_plots = {name: stack.enter_context(atomic_path(Path(plots_dir) / name))
                     for name in PLOT_FILES} if plots_dir is not None else None
        tmp_pred = stack.enter_context(atomic_path(pred_path))
        write_predictions(pred, tmp_pred)
        # scores the file as written
        result = scored(score_files(tmp_pred, annotations, lm, excluded, mode, action_thr),
                        annotations)
        if tmp_plots is not None:
            write_plots(result, lm, tmp_plots)
        write_metrics(result.metrics, tmp_out)
        Path(out).unlink(missing_ok=True)  # no old metrics beside the new predictions
    return result.metrics


def merge_predictions(parts: list[str | os.PathLike], out: str | os.PathLike) -> None:
    """Concatenate prediction CSVs (e.g. inference shards) into one, deterministically:
    rows ordered by (video_id, timestamp), each keyframe's rows in their part's order."""
    import pandas as pd  # here only: scoring a file imports no pandas

    frames = [read_predictions(p) for p in parts]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: [] for c in PRED_COLUMNS})
    merged = merged.sort_values(["video_id", "timestamp"], kind="stable")
    write_predictions(merged, out)


def scored(result: EvalResult, annotations: str | os.PathLike) -> EvalResult:
    """``result``, unless nothing was scored: annotations without one box of a label-map
    class (outside the excluded frames) give no mAP, an error rather than ``mAP nan``."""
    if not any(n > 0 for n in result.num_gt.values()):
        raise ArtifactError(annotations, "no ground-truth box of a label-map class (outside "
                                         "the excluded timestamps): nothing to score")
    return result


def score(predictions: str | os.PathLike, annotations: str | os.PathLike,
          labelmap: str | os.PathLike, excluded: str | os.PathLike | None,
          out: str | os.PathLike, plots_dir: str | os.PathLike | None = None,
          mode: str = DEFAULT_MODE, action_thr: float | None = None) -> dict:
    """Score any AVA result file (ours, SlowFast's, mmaction2's) -> ``metrics.json`` (and
    the plots under ``plots_dir``), as ``mode`` scores; returns the metrics dict."""
    lm = read_labelmap(labelmap)
    result = scored(score_files(predictions, annotations, lm, excluded, mode, action_thr),
                    annotations)
    if plots_dir is not None:
        write_plots(result, lm, {name: Path(plots_dir) / name for name in PLOT_FILES})
    write_metrics(result.metrics, out)
    return result.metrics


__all__ = ["EvalConfig", "merge_predictions", "run", "score"]
