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
from torch.utils.data import DataLoader
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.atomic import write_text_atomic
from .artifacts.checkpoint import load_checkpoint, save_checkpoint
from .artifacts.detections import read_detections
from .artifacts.features import FeatureStore
from .artifacts.labelmap import LabelMap, read_labelmap
from .keyframes import FeatureCache, Keyframe, TrainKeyframes, box_iou, collate_train
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
    cache: str = "auto"              # features in RAM: auto (if < cache_max_gb) | memory | disk
    cache_max_gb: float = 8.0
    num_workers: int = 2             # DataLoader workers when reading from disk


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


def epoch_loader(data: TrainKeyframes, epoch: int, cfg: TrainConfig, workers: int
                 ) -> DataLoader:
    """Batches of ``cfg.batch_size`` keyframes in the seeded order of ``epoch``."""
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data))
    data.epoch = epoch
    batches = [order[s:s + cfg.batch_size].tolist()
               for s in range(0, len(order), cfg.batch_size)]
    return DataLoader(data, batch_sampler=batches, collate_fn=collate_train,
                      num_workers=workers, prefetch_factor=4 if workers else None)


def train_epoch(head: torch.nn.Module, opt: torch.optim.Optimizer, loader: DataLoader,
                pose: list[int], cfg: TrainConfig, epoch: int, steps_per_epoch: int
                ) -> list[float]:
    """One pass over ``loader``; the learning rate is set before every step."""
    head.train()
    losses = []
    bar = tqdm(loader, desc=f"train {cfg.head} epoch {epoch + 1}", unit="step", leave=False)
    for s, (_kfs, context, rois, targets) in enumerate(bar):
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch * steps_per_epoch + s, cfg, steps_per_epoch)
        loss = ava_loss(head(context, rois), targets, pose)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


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
    cache = FeatureCache(store, view, in_memory=False)
    in_memory = cfg.cache == "memory" or (
        cfg.cache == "auto"
        and cache.nbytes(sorted({k.video for k in samples})) < cfg.cache_max_gb * 2**30)
    cache.in_memory = in_memory
    data = TrainKeyframes(samples, cache, cfg.jitter, cfg.seed)
    head = build_head(cfg.head, spec.channels, lm.num_classes, **cfg.hparams)
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
    validate = None
    if val_annotations is not None:
        from .evaluate import Validator
        validate = Validator(store, dets, val_annotations, lm, view)
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        loader = epoch_loader(data, epoch, cfg, 0 if in_memory else cfg.num_workers)
        losses = train_epoch(head, opt, loader, pose, cfg, epoch, steps_per_epoch)
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
               "lr": opt.param_groups[0]["lr"], "loss": float(np.mean(losses)), "val_mAP": ""}
        ckpt = {"head": cfg.head, "hparams": cfg.hparams, "in_channels": spec.channels,
                "num_classes": lm.num_classes, "labelmap": lm.to_dict(),
                "feature_spec": {**spec.to_dict(), "train_view": view},
                "state_dict": head.state_dict()}
        if validate is not None:
            row["val_mAP"] = validate(head)["mAP"]
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
