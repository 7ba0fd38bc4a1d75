"""Stage ``eval``: run a trained head on cached features, write AVA predictions, score them.

Inference uses the detections with score >= ``det_threshold`` on every keyframe of the
videos in the annotation CSV.  When the store has several views (scales, flips), the
logits of a box are averaged over the views before the activation (test-time
augmentation); flipped views map boxes through their :class:`ViewSpec`.
Scoring is :mod:`pipeline.ava_eval` (the official AVA frame-mAP).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.banks import BankReader, open_bank
from .artifacts.checkpoint import load_checkpoint
from .artifacts.detections import read_detections
from .artifacts.features import FeatureStore
from .artifacts.labelmap import LabelMap, read_labelmap
from .artifacts.metrics import write_metrics
from .artifacts.predictions import COLUMNS as PRED_COLUMNS
from .artifacts.predictions import read_predictions, write_predictions
from .ava_eval import evaluate_files, frame_map
from .keyframes import FeatureCache, Keyframe, batch
from .losses import activate
from .models import build_head


@dataclass
class EvalConfig:
    det_threshold: float = 0.85      # detections used at test time
    views: list[str] | None = None   # None: every view in the store (TTA)
    batch_size: int = 16             # keyframes per forward pass
    in_memory: bool = True


def load_head(ckpt: dict) -> torch.nn.Module:
    head = build_head(ckpt["head"], ckpt["in_channels"], ckpt["num_classes"], **ckpt["hparams"])
    head.load_state_dict(ckpt["state_dict"])
    return head.eval()


def test_keyframes(store: FeatureStore, dets: pd.DataFrame, videos: list[str]) -> list[Keyframe]:
    """Every keyframe of ``videos`` in the store that has at least one detection."""
    groups = {k: g for k, g in dets.groupby(["video_id", "timestamp"])}
    out = []
    for video in videos:
        for k, ts in enumerate(store.timestamps(video)):
            g = groups.get((video, int(ts)))
            if g is not None:
                out.append(Keyframe(video, int(ts), k,
                                    g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)))
    return out


@torch.inference_mode()
def predict(head: torch.nn.Module, labelmap: LabelMap, store: FeatureStore, dets: pd.DataFrame,
            videos: list[str], cfg: EvalConfig, default_views: list[str],
            bank: BankReader | None = None) -> pd.DataFrame:
    """AVA result rows (one per box and class) for the keyframes of ``videos``; ``bank``
    gives bank heads their slots (deterministic: no sampling at evaluation)."""
    dets = dets[dets["score"] >= cfg.det_threshold]
    kfs = test_keyframes(store, dets, videos)
    caches = [FeatureCache(store, v, cfg.in_memory) for v in cfg.views or default_views]
    return predict_keyframes(head, labelmap, kfs, caches, cfg.batch_size, bank)


@torch.inference_mode()
def predict_keyframes(head: torch.nn.Module, labelmap: LabelMap, kfs: list[Keyframe],
                      caches: list[FeatureCache], batch_size: int,
                      bank: BankReader | None = None) -> pd.DataFrame:
    """Logits averaged over the views of ``caches``, then activated, as AVA result rows."""
    was_training = head.training
    head.eval()
    ids = np.asarray(labelmap.ids)
    parts = []
    for s in tqdm(range(0, len(kfs), batch_size), desc="predict", unit="batch", leave=False):
        chunk = kfs[s:s + batch_size]
        slots = [bank.gather(chunk, flip=c.view(chunk[0].video).flip) if bank else None
                 for c in caches]
        logits = torch.stack([head(*batch(chunk, c), bank=sl)
                              for c, sl in zip(caches, slots, strict=True)]).mean(0)  # (N, K)
        probs = activate(logits, labelmap.pose_indices).numpy()
        boxes = np.concatenate([k.boxes for k in chunk])
        vid = np.concatenate([[k.video] * len(k.boxes) for k in chunk])
        ts = np.concatenate([[k.timestamp] * len(k.boxes) for k in chunk])
        n, kc = probs.shape
        parts.append(pd.DataFrame({
            "video_id": np.repeat(vid, kc), "timestamp": np.repeat(ts, kc),
            "x1": np.repeat(boxes[:, 0], kc), "y1": np.repeat(boxes[:, 1], kc),
            "x2": np.repeat(boxes[:, 2], kc), "y2": np.repeat(boxes[:, 3], kc),
            "action_id": np.tile(ids, n), "score": probs.reshape(-1)}))
    head.train(was_training)
    if not parts:
        return pd.DataFrame({c: [] for c in PRED_COLUMNS})
    return pd.concat(parts, ignore_index=True)


class Validator:
    """Scores a head on a val split during training; inputs are prepared once."""

    def __init__(self, store: FeatureStore, dets: pd.DataFrame, annotations: str | os.PathLike,
                 labelmap: LabelMap, view: str, cfg: EvalConfig | None = None,
                 bank: BankReader | None = None):
        self.cfg, self.bank = cfg or EvalConfig(), bank
        self.gt, self.labelmap = read_annotations(annotations), labelmap
        videos = sorted(set(self.gt["video_id"]) & set(store.videos()))
        dets = dets[dets["score"] >= self.cfg.det_threshold]
        self.keyframes = test_keyframes(store, dets, videos)
        self.caches = [FeatureCache(store, view, self.cfg.in_memory)]

    def __call__(self, head: torch.nn.Module) -> dict:
        pred = predict_keyframes(head, self.labelmap, self.keyframes, self.caches,
                                 self.cfg.batch_size, self.bank)
        return frame_map(self.gt, pred, self.labelmap).metrics


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


__all__ = ["EvalConfig", "Validator", "merge_predictions", "predict", "run", "score",
           "write_metrics"]
