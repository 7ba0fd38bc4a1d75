"""Keyframe batches for the heads: cached features + boxes -> (context, rois).

Shared by ``train``, inference in ``evaluate`` and ``bank``, so that boxes are mapped to
feature coordinates in exactly one place (:func:`make_rois`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .artifacts.features import FeatureStore, ViewSpec, boxes_to_input


@dataclass
class Keyframe:
    """One keyframe of one video: its index in the store and its person boxes."""

    video: str
    timestamp: int
    index: int                     # row k in the video's feature arrays
    boxes: np.ndarray              # (n, 4) float32, normalised original-frame coords
    labels: np.ndarray | None = None   # (n, K) float32 multi-hot, training only


class FeatureCache:
    """Per-keyframe context maps of one view; whole videos in memory when ``in_memory``."""

    def __init__(self, store: FeatureStore, view: str, in_memory: bool = True):
        self.store, self.view_name, self.in_memory = store, view, in_memory
        self._arrays: dict[str, np.ndarray] = {}
        self._views: dict[str, ViewSpec] = {}

    def view(self, video: str) -> ViewSpec:
        if video not in self._views:
            self._views[video] = self.store.view(video, self.view_name)
        return self._views[video]

    def context(self, video: str, index: int) -> np.ndarray:
        """(C, H, W) float16 map of keyframe ``index``."""
        if video not in self._arrays:
            arr = self.store.group(video)[self.view_name]
            self._arrays[video] = np.asarray(arr[:]) if self.in_memory else arr
        return np.asarray(self._arrays[video][index])

    def nbytes(self, videos: list[str]) -> int:
        """Bytes that holding ``videos`` in memory would take."""
        total = 0
        for v in videos:
            arr = self.store.group(v)[self.view_name]
            total += int(np.prod(arr.shape)) * arr.dtype.itemsize
        return total


def make_rois(boxes: list[np.ndarray], views: list[ViewSpec]) -> torch.Tensor:
    """Normalised boxes of B keyframes -> (N, 5) rois ``[b, x1, y1, x2, y2]`` in
    feature-map pixels of each keyframe's view."""
    rows = []
    for b, (bx, view) in enumerate(zip(boxes, views, strict=True)):
        inp = boxes_to_input(bx, view) / view.feature_stride
        rows.append(np.concatenate([np.full((len(inp), 1), b, np.float32), inp], axis=1))
    return torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, 5), np.float32))


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Move each coordinate by up to ±``amount`` of the box size, then clamp to [0, 1].

    A box never collapses: after clamping, x2 >= x1 + eps and y2 >= y1 + eps.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if amount <= 0 or len(boxes) == 0:
        return boxes.copy()
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)       # (n, 4) w,h,w,h
    out = boxes + rng.uniform(-amount, amount, boxes.shape).astype(np.float32) * wh
    out = np.clip(out, 0.0, 1.0)
    eps = np.float32(1e-3)
    out[:, 2:] = np.maximum(out[:, 2:], np.minimum(out[:, :2] + eps, 1.0))
    out[:, :2] = np.minimum(out[:, :2], out[:, 2:] - eps)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4), (m, 4) -> (n, m) IoU."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def batch(keyframes: list[Keyframe], cache: FeatureCache, boxes: list[np.ndarray] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the context maps (B, C, H, W) float32 and the rois (N, 5) of ``keyframes``."""
    ctx = np.stack([cache.context(k.video, k.index) for k in keyframes])
    views = [cache.view(k.video) for k in keyframes]
    rois = make_rois(boxes if boxes is not None else [k.boxes for k in keyframes], views)
    return torch.from_numpy(ctx.astype(np.float32)), rois


class TrainKeyframes(Dataset):
    """Training keyframes with box jitter seeded by (seed, epoch, index).

    The jitter of a sample does not depend on the worker that loads it, so training is
    identical for any ``num_workers``.  Set ``epoch`` before each pass.
    """

    def __init__(self, samples: list[Keyframe], cache: FeatureCache, jitter: float, seed: int):
        self.samples, self.cache, self.jitter, self.seed = samples, cache, jitter, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        k = self.samples[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return k, self.cache.context(k.video, k.index), self.cache.view(k.video), \
            jitter_boxes(k.boxes, rng, self.jitter)

    def collate(self, items: list) -> tuple[list[Keyframe], torch.Tensor, torch.Tensor,
                                            torch.Tensor]:
        """:func:`collate_train`, plus an empty batch (one blank map, no actors) for a
        distributed rank whose share of a global batch is empty."""
        if items:
            return collate_train(items)
        k = self.samples[0]
        ctx = np.zeros((1, *self.cache.context(k.video, k.index).shape), np.float32)
        return [], torch.from_numpy(ctx), torch.zeros(0, 5), torch.zeros(0, k.labels.shape[1])


def collate_train(items) -> tuple[list[Keyframe], torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (keyframes, context (B, C, H, W), rois (N, 5), targets (N, K))."""
    kfs, ctx, views, boxes = zip(*items, strict=True)
    context = torch.from_numpy(np.stack(ctx).astype(np.float32))
    rois = make_rois(list(boxes), list(views))
    targets = torch.from_numpy(np.concatenate([k.labels for k in kfs]))
    return list(kfs), context, rois, targets
