"""Keyframe batches for the heads: cached features + boxes -> (context, rois, valid).

Shared by ``train``, :mod:`pipeline.inference` (``eval``, the validator, ``demo``) and
``bank``, so that boxes are mapped to feature coordinates (:func:`make_rois`) and the
image's region of each map is found (:func:`valid_region`) in exactly one place.  Maps are
read from the feature store by :class:`RowReader`, a decoder of the shards that
``extract`` writes: kept over zarr's own ``array[start:stop]`` because it is faster
(``bench/train.py --reader both``, linear head from disk: 1.2-3.6x zarr's keyframes/s in
5 runs, with or without zarr's concurrency settings; acar is compute-bound, same rate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import google_crc32c
import numpy as np
import torch
import zarr
from numcodecs import Zstd
from torch.utils.data import Dataset
from zarr.storage import LocalStore

from .artifacts import ArtifactError
from .artifacts.features import FeatureStore, ViewSpec, boxes_to_input, dequantise
from .models.masking import cells_inside

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Keyframe:
    """One keyframe of one video: its index in the store and its person boxes."""

    video: str
    timestamp: int
    index: int                     # row k in the video's feature arrays
    boxes: np.ndarray              # (n, 4) float32, normalised original-frame coords
    labels: np.ndarray | None = None   # (n, K) float32 multi-hot, training only


def _is_view_layout(arr: zarr.Array) -> bool:
    """Whether ``arr`` has the codecs that ``FeatureStore.create_view`` writes."""
    # one-byte values (an int8 view) have no byte order
    order = {"configuration": {"endian": "little"}} if arr.dtype.itemsize > 1 else {}
    layout = [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, *arr.shape[1:]],
        "codecs": [{"name": "bytes", **order},
                   {"name": "zstd", "configuration": {"level": 0, "checksum": False}}],
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                         {"name": "crc32c"}],
        "index_location": "end"}}]
    return json.loads(json.dumps(arr.metadata.to_dict().get("codecs"))) == layout


class RowReader:
    """Rows of one view array (K, ...): ``reader[start:stop]``, ``reader[k]``.

    A view in the layout that ``FeatureStore.create_view`` writes, in a local store,
    is decoded here directly: a shard's index is read once, then a range of rows is one
    file read and a zstd decode per row, into the caller's rows (:meth:`read_into`).
    zarr-python awaits a file read and a decode per chunk, about 3x the CPU per keyframe
    (``bench/train.py``).  Other arrays and stores are read through zarr.
    """

    def __init__(self, arr: zarr.Array):
        self.arr = arr
        direct = (isinstance(arr.store, LocalStore) and arr.shards is not None
                  and _is_view_layout(arr))
        self.rows = arr.shards[0] if direct else 0           # rows per shard; 0: zarr
        self._index: dict[int, tuple[Path, np.ndarray] | None] = {}
        self._zstd = Zstd()

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(self.arr.shape[0])
            return self.read(start, stop)
        if isinstance(index, int | np.integer):
            return self.read(int(index), int(index) + 1)[0]
        return np.asarray(self.arr[index])

    @property
    def direct(self) -> bool:
        """Whether rows are decoded here (a local store in extract's layout), not by zarr."""
        return bool(self.rows)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``."""
        if not self.rows or stop <= start:
            return np.asarray(self.arr[start:stop])
        out = np.empty((stop - start, *self.arr.shape[1:]), self.arr.dtype.newbyteorder("<"))
        self.read_into(start, stop, list(out))
        return out

    def read_into(self, start: int, stop: int, rows_out: Sequence[np.ndarray]) -> None:
        """Decode rows ``[start, stop)`` into ``rows_out[i]`` (row ``start + i``): each a
        C-contiguous array of one row's shape and little-endian dtype, e.g. rows of a
        batch in its own order, so that a batch is not copied again after the decode."""
        arr, rows = self.arr, self.rows
        if len(rows_out) != stop - start:
            raise ValueError(f"{len(rows_out)} output rows for rows [{start}, {stop})")
        if not rows:
            for dst, row in zip(rows_out, np.asarray(arr[start:stop]), strict=True):
                dst[...] = row
            return
        filled = [False] * (stop - start)
        for shard in range(start // rows, (stop - 1) // rows + 1) if stop > start else ():
            lo, hi = max(start, shard * rows), min(stop, (shard + 1) * rows)
            found = self._shard_index(shard)
            if found is None:
                continue                                     # no shard: fill value
            path, index = found
            index = index[lo - shard * rows:hi - shard * rows]
            stored = index[:, 0] >= 0                        # -1: an empty chunk
            if not stored.any():
                continue
            base = int(index[stored, 0].min())
            with open(path, "rb") as f:
                f.seek(base)
                data = memoryview(f.read(int((index[stored, 0] + index[stored, 1]).max())
                                         - base))
            for r, (offset, nbytes) in zip(range(lo, hi), index, strict=True):
                if offset >= 0:                     # little-endian bytes, decoded in place
                    self._zstd.decode(data[offset - base:offset - base + nbytes],
                                      out=rows_out[r - start])
                    filled[r - start] = True
        for dst, done in zip(rows_out, filled, strict=True):
            if not done:
                dst[...] = arr.metadata.fill_value

    def _shard_index(self, shard: int) -> tuple[Path, np.ndarray] | None:
        """(file, (rows, 2) int64 offsets and lengths) of a shard; None: not stored."""
        if shard not in self._index:
            arr, size = self.arr, 16 * self.rows + 4
            path = Path(arr.store.root) / arr.path / arr.metadata.encode_chunk_key(
                (shard,) + (0,) * (arr.ndim - 1))
            found = None
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(-size, 2)
                    tail = f.read(size)
                if google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
                    raise ArtifactError(str(path), "shard index checksum mismatch")
                found = path, np.frombuffer(tail[:-4], "<u8").reshape(-1, 2).astype(np.int64)
            self._index[shard] = found
        return self._index[shard]


class Dequantised:
    """Rows of an int8 view and of its (K, C) scales, read as float16 maps:
    ``rows[k]`` (C, H, W), ``rows[a:b]`` (b - a, C, H, W).  Each part is an array in
    memory or a reader of the store array."""

    def __init__(self, q: np.ndarray | RowReader | zarr.Array,
                 scale: np.ndarray | RowReader | zarr.Array):
        self.q, self.scale = q, scale

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.q.shape) if not isinstance(self.q, RowReader) else \
            tuple(self.q.arr.shape)

    def __getitem__(self, index: int | slice) -> np.ndarray:
        return dequantise(np.asarray(self.q[index]), np.asarray(self.scale[index]))


class FeatureCache:
    """Per-keyframe context maps of one view; whole videos in memory when ``in_memory``
    (an int8 store stays int8 in memory, dequantised per read: :class:`Dequantised`).

    ``time``: whether the head reads time (``Head.temporal``).  False (every head but
    s_only/t_only): (C, H, W) maps; a store with time bins (``extract.temporal: N``, views
    (K, C, N, H, W)) gives the mean of its bins.  True: (C, N, H, W) maps; a store without
    time bins is a one-line :class:`ArtifactError`."""

    # how a store array is read from disk (bench/train.py --reader swaps it)
    reader: Callable[[zarr.Array], RowReader | zarr.Array] = RowReader

    def __init__(self, store: FeatureStore, view: str, in_memory: bool = True,
                 time: bool = False):
        self.store, self.view_name, self.in_memory = store, view, in_memory
        self.time = time
        self._arrays: dict[str, np.ndarray | RowReader | zarr.Array | Dequantised] = {}
        self._views: dict[str, ViewSpec] = {}
        self._binned: dict[str, bool] = {}

    def view(self, video: str) -> ViewSpec:
        if video not in self._views:
            self._views[video] = self.store.view(video, self.view_name)
        return self._views[video]

    def _array(self, video: str) -> np.ndarray | RowReader | zarr.Array | Dequantised:
        """The video's (K, C, H, W) or (K, C, N, H, W) maps: in memory, or a reader of the
        store array."""
        if video not in self._arrays:
            arr = self.store.array(video, self.view_name)
            self._binned[video] = binned = arr.ndim == 5
            if self.time and not binned:
                raise ArtifactError(self.store.url, f"video '{video}' view '{self.view_name}': "
                                    f"the head reads time bins, the store has none (maps "
                                    f"{tuple(arr.shape)}, extract.temporal: mean); extract "
                                    "with --temporal N (extract.temporal: N)")
            scale = self.store.scale(video, self.view_name)
            with self._unreadable(video):
                load = (lambda a: np.asarray(a[:])) if self.in_memory else self.reader
                self._arrays[video] = load(arr) if scale is None else \
                    Dequantised(load(arr), load(scale))
        return self._arrays[video]

    @contextmanager
    def _unreadable(self, video: str) -> Iterator[None]:
        """A shard that does not decode (truncated, corrupt) is one line naming the store,
        the video and the view, not zarr's traceback."""
        try:
            yield
        except ArtifactError:
            raise
        except (ValueError, RuntimeError, OSError) as err:
            raise ArtifactError(self.store.url, f"video '{video}' view '{self.view_name}': "
                                f"unreadable data ({err.__class__.__name__}: "
                                f"{str(err)[:120]}); run `acar extract --check --values`"
                                ) from None

    def _rows(self, video: str, rows: np.ndarray) -> np.ndarray:
        """Stored rows (b, C, [N,] H, W) -> what the head reads: the mean of the time bins
        (float16, computed in float32) unless ``time``."""
        if self._binned[video] and not self.time:
            return rows.astype(np.float32).mean(axis=2).astype(np.float16)   # (b, C, H, W)
        return rows

    def context(self, video: str, index: int) -> np.ndarray:
        """(C, H, W) float16 map of keyframe ``index`` ((C, N, H, W) with ``time``)."""
        arr = self._array(video)
        return self._rows(video, np.asarray(arr[index:index + 1]))[0]

    def contexts(self, keys: Sequence[tuple[str, int]]) -> list[np.ndarray]:
        """(C, H, W) float16 maps of keyframes ``(video, index)``, in the order of ``keys``
        ((C, N, H, W) with ``time``).

        From disk, each run of consecutive indices of a video is one read
        (:class:`RowReader`), not one per keyframe; when the maps of ``keys`` share one
        shape and dtype they are decoded straight into the rows of one (B, C, H, W) array,
        in the order of ``keys``, which :func:`stack_float32` then does not copy again.
        """
        runs = index_runs(keys)
        batch = self._batch_buffer(runs, len(keys))
        if batch is not None:
            where: dict[tuple[str, int], list[int]] = {}
            for b, key in enumerate(keys):
                where.setdefault(key, []).append(b)
            for video, run in runs:
                first = [where[(video, k)][0] for k in run]
                with self._unreadable(video):
                    self._array(video).read_into(run.start, run.stop,
                                                 [batch[b] for b in first])
                for k, b in zip(run, first, strict=True):
                    for again in where[(video, k)][1:]:    # a keyframe drawn twice
                        batch[again] = batch[b]
            return list(batch)
        maps: dict[tuple[str, int], np.ndarray] = {}
        for video, run in runs:
            with self._unreadable(video):
                rows = self._rows(video, np.asarray(self._array(video)[run.start:run.stop]))
            maps.update(((video, k), row) for k, row in zip(run, rows, strict=True))
        return [maps[key] for key in keys]

    def _batch_buffer(self, runs: list[tuple[str, range]], size: int) -> np.ndarray | None:
        """An empty (size, C, ...) array for the rows of ``runs``, when they are all read
        by RowReader's own decoder as stored (no mean over time bins) with one shape and
        dtype; else None."""
        if self.in_memory or not runs:
            return None
        readers = [self._array(video) for video, _ in runs]
        if not all(isinstance(r, RowReader) and r.direct for r in readers) or any(
                self._binned[video] and not self.time for video, _ in runs):
            return None
        layouts = {(tuple(r.arr.shape[1:]), r.arr.dtype.newbyteorder("<")) for r in readers}
        if len(layouts) != 1:
            return None
        (shape, dtype), = layouts
        return np.empty((size, *shape), dtype)

    def open(self, videos: Sequence[str]) -> None:
        """Open (from disk) or load (in memory) the maps and views of ``videos`` now, so
        that DataLoader workers, forked later, inherit them instead of opening every
        array again in every epoch."""
        for v in videos:
            self._array(v)
            self.view(v)

    def nbytes(self, videos: list[str]) -> int:
        """Bytes that holding ``videos`` in memory would take (int8: with the scales)."""
        total = 0
        for v in videos:
            arrays = [self.store.array(v, self.view_name)]
            if (scale := self.store.scale(v, self.view_name)) is not None:
                arrays.append(scale)
            total += sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in arrays)
        return total


BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


def keyframe_rows(df: pd.DataFrame) -> dict[tuple[str, int], np.ndarray]:
    """(video_id, timestamp) -> the positions of its rows in ``df``, in order (a pandas
    groupby with a DataFrame per keyframe took 2-4 s of every training and scoring run)."""
    video = df["video_id"].astype(str).to_numpy()
    ts = df["timestamp"].to_numpy(np.int64)
    order = np.lexsort((ts, video))                       # stable: rows keep their order
    v, t = video[order], ts[order]
    cut = np.flatnonzero((v[1:] != v[:-1]) | (t[1:] != t[:-1])) + 1
    return {(str(video[r[0]]), int(ts[r[0]])): r for r in np.split(order, cut) if len(r)}


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


def valid_cells(view: ViewSpec, height: int, width: int) -> tuple[int, int]:
    """``(rows, cols)`` of the context cells of a ``height`` x ``width`` map that hold the
    image of ``view``: ``ceil(image height / stride)``, ``ceil(image width / stride)``,
    clipped to the map.

    ``extract`` places the image at the top-left of the canvas and pads right and bottom
    (a flipped view is flipped before padding, so its image is at the top-left too): the
    cells count from the top-left corner, as the heads' ``valid`` does, up to the image's
    far edge (``valid[2:]``).
    """
    rows, cols = cells_inside(view.valid, view.feature_stride)
    return min(rows, height), min(cols, width)


def valid_region(views: Sequence[ViewSpec], height: int, width: int) -> torch.Tensor | None:
    """(B, 2) int64 ``(rows, cols)`` of each keyframe's image on its map
    (:func:`valid_cells`); None when every image covers its whole ``height`` x ``width``
    map (square toy videos), so that the heads run their unmasked path."""
    cells = [valid_cells(v, height, width) for v in views]
    if all(c == (height, width) for c in cells):
        return None
    return torch.tensor(cells, dtype=torch.int64).reshape(-1, 2)


def batch(keyframes: list[Keyframe], cache: FeatureCache, boxes: list[np.ndarray] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The context maps (B, C, H, W) float32, rois (N, 5) and valid region (B, 2) int64 or
    None (:func:`valid_region`) of ``keyframes``: what a head is called with."""
    ctx = stack_float32(cache.contexts([(k.video, k.index) for k in keyframes]))
    views = [cache.view(k.video) for k in keyframes]
    rois = make_rois(boxes if boxes is not None else [k.boxes for k in keyframes], views)
    return ctx, rois, valid_region(views, *ctx.shape[-2:])


def stack_float32(maps: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, C, H, W) float32 from B float16 maps: stacked, then converted by one torch op
    (a conversion per map would pay torch's thread fan-out B times).  Maps of videos of
    other sizes (aspect ratios) are zero-padded right and bottom to the largest: cells
    outside every image, which :func:`valid_region` masks for the heads."""
    h, w = max(m.shape[-2] for m in maps), max(m.shape[-1] for m in maps)
    if any(m.shape[-2:] != (h, w) for m in maps):
        maps = [np.pad(m, [(0, 0)] * (m.ndim - 2) + [(0, h - m.shape[-2]), (0, w - m.shape[-1])])
                for m in maps]
    stacked = _rows_of_one(maps)
    if stacked is None:
        return torch.from_numpy(np.stack(maps)).float()
    return torch.from_numpy(stacked).to(torch.float32, copy=True)   # never a view


def _rows_of_one(maps: Sequence[np.ndarray]) -> np.ndarray | None:
    """The (B, ...) array whose rows 0..B-1 ``maps`` are, in order (what
    :meth:`FeatureCache.contexts` decodes a batch into); None if they are not."""
    base = maps[0].base
    if not isinstance(base, np.ndarray) or base.ndim != maps[0].ndim + 1 \
            or len(base) != len(maps) or not base.flags.c_contiguous:
        return None
    start, step = base.__array_interface__["data"][0], base.strides[0]
    for b, m in enumerate(maps):
        if m.base is not base or m.shape != base.shape[1:] or m.dtype != base.dtype \
                or m.__array_interface__["data"][0] != start + b * step:
            return None
    return base


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
                                            torch.Tensor | None, torch.Tensor]:
        """:func:`collate_train`, plus an empty batch (one blank map, no actors) for a
        distributed rank whose share of a global batch is empty."""
        if items:
            return collate_train(items)
        k = self.samples[0]
        ctx = np.zeros((1, *self.cache.context(k.video, k.index).shape), np.float32)
        return ([], torch.from_numpy(ctx), torch.zeros(0, 5), None,
                torch.zeros(0, k.labels.shape[1]))


def collate_train(items) -> tuple[list[Keyframe], torch.Tensor, torch.Tensor,
                                  torch.Tensor | None, torch.Tensor]:
    """-> (keyframes, context (B, C, H, W), rois (N, 5), valid (B, 2) or None, targets
    (N, K)); ``valid`` as in :func:`batch`."""
    kfs, ctx, views, boxes = zip(*items, strict=True)
    context = stack_float32(ctx)
    rois = make_rois(list(boxes), list(views))
    valid = valid_region(views, *context.shape[-2:])
    targets = torch.from_numpy(np.concatenate([k.labels for k in kfs]))
    return list(kfs), context, rois, valid, targets
