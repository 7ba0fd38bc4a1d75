"""Keyframe batches for the heads: cached features + boxes -> (context, rois).

Shared by ``train``, inference in ``evaluate`` and ``bank``, so that boxes are mapped to
feature coordinates in exactly one place (:func:`make_rois`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .artifacts.features import FeatureStore, RowReader, ViewSpec, boxes_to_input


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

    def _array(self, video: str) -> np.ndarray | RowReader:
        """The video's (K, C, H, W) maps: in memory, or a reader of the store array."""
        if video not in self._arrays:
            arr = self.store.group(video)[self.view_name]
            self._arrays[video] = np.asarray(arr[:]) if self.in_memory else RowReader(arr)
        return self._arrays[video]

    def context(self, video: str, index: int) -> np.ndarray:
        """(C, H, W) float16 map of keyframe ``index``."""
        return np.asarray(self._array(video)[index])

    def contexts(self, keys: Sequence[tuple[str, int]]) -> list[np.ndarray]:
        """(C, H, W) float16 maps of keyframes ``(video, index)``, in the order of ``keys``.

        From disk, each run of consecutive indices of a video is one read
        (:class:`~pipeline.artifacts.features.RowReader`), not one per keyframe.
        """
        maps: dict[tuple[str, int], np.ndarray] = {}
        for video, run in index_runs(keys):
            rows = self._array(video)[run.start:run.stop]
            maps.update(((video, k), row) for k, row in zip(run, rows, strict=True))
        return [maps[key] for key in keys]

    def open(self, videos: Sequence[str]) -> None:
        """Open (from disk) or load (in memory) the maps and views of ``videos`` now, so
        that DataLoader workers, forked later, inherit them instead of opening every
        array again in every epoch."""
        for v in videos:
            self._array(v)
            self.view(v)

    def nbytes(self, videos: list[str]) -> int:
        """Bytes that holding ``videos`` in memory would take."""
        total = 0
        for v in videos:
            arr = self.store.group(v)[self.view_name]
            total += int(np.prod(arr.shape)) * arr.dtype.itemsize
        return total


def index_runs(keys: Sequence[tuple[str, int]]) -> list[tuple[str, range]]:
    """The distinct ``(video, index)`` keys as runs of consecutive indices per video."""
    runs: list[tuple[str, range]] = []
    for video, k in sorted(set(keys)):
        if runs and runs[-1][0] == video and runs[-1][1].stop == k:
            runs[-1] = (video, range(runs[-1][1].start, k + 1))
        else:
            runs.append((video, range(k, k + 1)))
    return runs


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
    ctx = stack_float32(cache.contexts([(k.video, k.index) for k in keyframes]))
    views = [cache.view(k.video) for k in keyframes]
    rois = make_rois(boxes if boxes is not None else [k.boxes for k in keyframes], views)
    return ctx, rois


def stack_float32(maps: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, C, H, W) float32 from B float16 maps: stacked, then converted by one torch op
    (a conversion per map would pay torch's thread fan-out B times)."""
    return torch.from_numpy(np.stack(maps)).float()


class TrainKeyframes(Dataset):
    """Training keyframes with box jitter seeded by (seed, epoch, index).

    The jitter of a sample does not depend on the worker that loads it, so training is
    identical for any ``num_workers``.  Set ``epoch`` before each pass.  A DataLoader
    fetches a whole batch with :meth:`__getitems__`, which reads the maps of consecutive
    keyframes of a video together (:meth:`FeatureCache.contexts`).
    """

    def __init__(self, samples: list[Keyframe], cache: FeatureCache, jitter: float, seed: int):
        self.samples, self.cache, self.jitter, self.seed = samples, cache, jitter, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list:
        """[(keyframe, context (C, H, W) float16, view, jittered boxes)] of ``indices``."""
        kfs = [self.samples[i] for i in indices]
        maps = self.cache.contexts([(k.video, k.index) for k in kfs])
        return [(k, m, self.cache.view(k.video),
                 jitter_boxes(k.boxes, np.random.default_rng([self.seed, self.epoch, i]),
                              self.jitter))
                for i, k, m in zip(indices, kfs, maps, strict=True)]

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
    context = stack_float32(ctx)
    rois = make_rois(list(boxes), list(views))
    targets = torch.from_numpy(np.concatenate([k.labels for k in kfs]))
    return list(kfs), context, rois, targets
