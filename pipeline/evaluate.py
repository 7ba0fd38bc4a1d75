"""Stage ``eval``: run a trained head on cached features, write AVA predictions, score them.

Inference uses the detections with score >= ``det_threshold`` on every keyframe of the
videos in the annotation CSV (:mod:`pipeline.inference`, imported only when a model is
run: scoring a result file needs neither torch nor the heads).  Scoring is
:mod:`pipeline.ava_eval` (the official AVA frame-mAP).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.labelmap import read_labelmap
from .artifacts.metrics import write_metrics
from .artifacts.predictions import COLUMNS as PRED_COLUMNS
from .artifacts.predictions import read_predictions, write_predictions
from .ava_eval import evaluate_files
from .inference_config import PredictConfig


@dataclass
class EvalConfig(PredictConfig):
    """The eval stage's parameters (``stages.yaml eval``): those of prediction."""


def run(cfg: EvalConfig, model: str | os.PathLike, features: str, detections: str | os.PathLike,
        annotations: str | os.PathLike, labelmap: str | os.PathLike, out: str | os.PathLike,
        predictions_out: str | os.PathLike | None = None,
        excluded: str | os.PathLike | None = None,
        plots_dir: str | os.PathLike | None = None, shard: tuple[int, int] = (0, 1),
        bank: str | None = None) -> dict:
    """Predict on the videos of ``annotations``, write predictions and ``metrics.json``.

    ``bank``: the bank store a bank head reads (the checkpoint's ``bank`` says which kind).
    With ``shard=(i, N)``, N > 1, only every N-th video (from the i-th) is predicted and
    only the predictions are written (no metrics): merge the parts with
    :func:`merge_predictions`, then :func:`score` them.
    """
    from .artifacts.checkpoint import load_checkpoint
    from .artifacts.detections import read_detections
    from .artifacts.features import FeatureStore
    from .bank_reader import open_bank
    from .inference import load_head, predict

    ckpt = load_checkpoint(model)
    lm = read_labelmap(labelmap)
    if list(lm.ids) != list(ckpt["labelmap"]["ids"]):
        raise ArtifactError(labelmap, f"label map differs from the one {model} was trained on")
    head = load_head(ckpt)
    store = FeatureStore(features)
    dets, _ = read_detections(detections)
    gt = read_annotations(annotations)
    videos = sorted(set(gt["video_id"]) & set(store.videos()))
    if not videos:
        raise ArtifactError(annotations, f"none of its videos are in the feature store {features}")
    views = store.spec(videos[0]).views
    i, n = shard
    banks = open_bank(bank, head, store.spec(videos[0]).to_dict(), cfg.in_memory)
    pred = predict(head, lm, store, dets, videos[i::n], cfg, list(views), banks)
    pred_path = predictions_out or os.path.join(os.path.dirname(str(out)) or ".",
                                                "predictions.csv")
    write_predictions(pred, pred_path)
    if n > 1:
        return {}
    return score(pred_path, annotations, labelmap, excluded, out, plots_dir)


def merge_predictions(parts: list[str | os.PathLike], out: str | os.PathLike) -> None:
    """Concatenate prediction CSVs (e.g. inference shards) into one, deterministically:
    rows ordered by (video_id, timestamp), each keyframe's rows in their part's order."""
    frames = [read_predictions(p) for p in parts]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: [] for c in PRED_COLUMNS})
    merged = merged.sort_values(["video_id", "timestamp"], kind="stable")
    write_predictions(merged, out)


def score(predictions: str | os.PathLike, annotations: str | os.PathLike,
          labelmap: str | os.PathLike, excluded: str | os.PathLike | None,
          out: str | os.PathLike, plots_dir: str | os.PathLike | None = None) -> dict:
    """Score any AVA result file (ours, SlowFast's, mmaction2's) -> ``metrics.json``."""
    return evaluate_files(predictions, annotations, labelmap, excluded, out, plots_dir)


__all__ = ["EvalConfig", "merge_predictions", "run", "score", "write_metrics"]
