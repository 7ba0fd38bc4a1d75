"""Stage ``train``: a head trained on cached features only (no video decoding).

Samples are the keyframes of the annotation CSV that the feature store has.  Each
keyframe contributes its GT person boxes plus the detected boxes with score >=
``det_threshold`` that overlap a GT box with IoU >= ``match_iou`` (they take that
box's labels; unmatched detections are dropped).  Boxes are jittered by up to
±``jitter`` of their size.  Loss: per-class BCE with a softmax over the pose classes
(:mod:`pipeline.losses`).  SGD with Nesterov momentum, linear warm-up, then step decay,
stepped per iteration.  The checkpoint is rewritten after every epoch, so
``--resume`` continues an interrupted run with the same result.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.atomic import write_text_atomic
from .artifacts.banks import open_bank
from .artifacts.checkpoint import load_checkpoint, save_checkpoint
from .artifacts.detections import read_detections
from .artifacts.features import FeatureStore
from .artifacts.labelmap import LabelMap, read_labelmap
from .keyframes import FeatureCache, Keyframe, batch, box_iou, jitter_boxes
from .losses import ava_loss
from .models import build_head

LOG_COLUMNS = ["epoch", "step", "lr", "loss", "val_mAP"]


@dataclass
class TrainConfig:
    head: str = "linear"
    hparams: dict = field(default_factory=dict)   # head constructor kwargs
    view: str | None = None          # feature view to train on (default: the store's first)
    epochs: int = 10
    batch_size: int = 8              # keyframes per step
    lr: float = 0.1                  # base learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-7
    warmup_epochs: float = 1.0       # linear warm-up from lr * warmup_factor
    warmup_factor: float = 0.1
    # step-decay points, as fractions of the whole training
    lr_steps: list[float] = field(default_factory=lambda: [0.7])
    lr_gamma: float = 0.1
    det_threshold: float = 0.9       # detected boxes used as extra samples
    match_iou: float = 0.9           # ...when they overlap a GT box this much
    jitter: float = 0.075            # ±fraction of box size
    seed: int = 0
    in_memory: bool = True           # cache the store's features in RAM


def gt_keyframes(store: FeatureStore, view: str, gt: pd.DataFrame, dets: pd.DataFrame,
                 labelmap: LabelMap, det_threshold: float, match_iou: float) -> list[Keyframe]:
    """Training keyframes: GT boxes with multi-hot labels, plus matched detections."""
    index = labelmap.index
    gt = gt[gt["action_id"].isin(index)]
    dets = dets[dets["score"] >= det_threshold]
    det_groups = {k: g for k, g in dets.groupby(["video_id", "timestamp"])}
    times = {v: store.timestamps(v) for v in store.videos()}
    out: list[Keyframe] = []
    for (video, ts), g in gt.groupby(["video_id", "timestamp"], sort=True):
        k = np.flatnonzero(times[video] == ts) if video in times else []
        if len(k) == 0:
            continue
        coords = g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
        uniq, inv = np.unique(coords, axis=0, return_inverse=True)
        labels = np.zeros((len(uniq), labelmap.num_classes), np.float32)
        labels[inv.reshape(-1), [index[a] for a in g["action_id"]]] = 1.0
        boxes = [uniq]
        lab = [labels]
        if (video, ts) in det_groups:
            dboxes = det_groups[(video, ts)][["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
            iou = box_iou(dboxes, uniq)
            best = iou.argmax(axis=1)
            ok = iou[np.arange(len(dboxes)), best] >= match_iou
            ok &= ~(iou >= 1.0 - 1e-6).any(axis=1)   # the GT box itself is already there
            boxes.append(dboxes[ok])
            lab.append(labels[best[ok]])
        out.append(Keyframe(video, int(ts), int(k[0]), np.concatenate(boxes),
                            np.concatenate(lab)))
    return out


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up, then step decay by ``lr_gamma`` at each ``lr_steps`` fraction."""
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (cfg.warmup_factor + (1 - cfg.warmup_factor) * step / warm)
    decays = sum(step >= f * total for f in cfg.lr_steps)
    return cfg.lr * cfg.lr_gamma ** decays


def run(cfg: TrainConfig, features: str, detections: str | os.PathLike,
        annotations: str | os.PathLike, labelmap: str | os.PathLike, out: str | os.PathLike,
        val_annotations: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
        resume: bool = False, bank: str | None = None) -> dict:
    """Train ``cfg.head`` and write the checkpoint ``out``; returns the final log row."""
    torch.manual_seed(cfg.seed)
    lm = read_labelmap(labelmap)
    store = FeatureStore(features)
    videos = store.videos()
    if not videos:
        raise ArtifactError(features, "feature store has no complete videos")
    spec = store.spec(videos[0])
    view = cfg.view or spec.views[0]
    dets, _ = read_detections(detections)
    samples = gt_keyframes(store, view, read_annotations(annotations), dets, lm,
                           cfg.det_threshold, cfg.match_iou)
    if not samples:
        raise ArtifactError(annotations, "no annotated keyframe has features in " + features)
    cache = FeatureCache(store, view, cfg.in_memory)
    head = build_head(cfg.head, spec.channels, lm.num_classes, **cfg.hparams)
    banks = open_bank(bank, head, spec.to_dict(), cfg.in_memory)   # None: head reads no bank
    opt = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    log = Path(log) if log else Path(str(out) + ".log.csv")
    rows: list[dict] = []
    start_epoch = 0
    if resume and Path(out).exists():
        ckpt = load_checkpoint(out)
        state = ckpt.get("train", {})
        if state.get("config") == asdict(cfg):
            head.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(state["optimizer"])
            start_epoch, rows = state["epoch"], state.get("log", [])
    pose = lm.pose_indices
    for epoch in range(start_epoch, cfg.epochs):
        head.train()
        torch.manual_seed(cfg.seed * 1000 + epoch)
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(samples))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"train {cfg.head} epoch {epoch + 1}",
                   unit="step", leave=False)
        for s in bar:
            step = epoch * steps_per_epoch + s
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg, steps_per_epoch)
            kfs = [samples[i] for i in order[s * cfg.batch_size:(s + 1) * cfg.batch_size]]
            boxes = [jitter_boxes(k.boxes, rng, cfg.jitter) for k in kfs]
            context, rois = batch(kfs, cache, boxes)
            targets = torch.from_numpy(np.concatenate([k.labels for k in kfs]))
            slots = banks.gather(kfs, rng) if banks else None
            loss = ava_loss(head(context, rois, bank=slots), targets, pose)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
               "lr": opt.param_groups[0]["lr"], "loss": float(np.mean(losses)), "val_mAP": ""}
        ckpt = {"head": cfg.head, "hparams": cfg.hparams, "in_channels": spec.channels,
                "num_classes": lm.num_classes, "labelmap": lm.to_dict(),
                "feature_spec": {**spec.to_dict(), "train_view": view},
                "state_dict": head.state_dict(), "bank": getattr(head, "bank_request", None)}
        if val_annotations is not None:
            from .evaluate import EvalConfig, predict_and_score
            metrics = predict_and_score(ckpt, head, store, dets, val_annotations, lm,
                                        EvalConfig(), excluded=None, bank=banks)
            row["val_mAP"] = metrics["mAP"]
        rows.append(row)
        tqdm.write(f"epoch {row['epoch']}: loss {row['loss']:.4f}"
                   + (f" val mAP {row['val_mAP']:.4f}" if row["val_mAP"] != "" else ""))
        ckpt["train"] = {"config": asdict(cfg), "epoch": epoch + 1, "log": rows,
                         "optimizer": opt.state_dict(), "complete": epoch + 1 == cfg.epochs}
        save_checkpoint(ckpt, out)
        _write_log(rows, log)
    return rows[-1] if rows else {}


def _write_log(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
