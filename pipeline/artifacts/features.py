"""Feature stores: a Zarr v3 store ``features.zarr`` with one group per video.

Layout::

    features.zarr/                      root attrs: {"acar": {"kind": "features", "version": 1}}
      <video_id>/                       group attrs: {"acar": {**FeatureSpec, "complete": bool,
                                                               "frame_size": [W, H], "fps": float}}
        timestamps                      int32 (K,)            keyframe seconds
        <view>                          float16 (K, C, H, W)  one chunk per keyframe,
                                        stored in shards of SHARD_KEYFRAMES keyframes
                                        attrs: {"acar": ViewSpec}

A *view* is one test-time variant of the input (``s256``, ``s256_flip``, ``s288``…).
``complete`` is set last, so an interrupted run leaves an incomplete group that the
next run rebuilds.  Each video group is written by exactly one process, which is what
makes ``--shard i/N`` safe for concurrent writers.  Banks (``pipeline.artifacts.banks``)
reuse this module's store helpers.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numcodecs import Zstd
from zarr.storage import LocalStore

from . import ArtifactError

KIND = "features"
VERSION = 1
# Zarr v3 sharding codec: each file holds this many keyframe chunks.  DVC's push/pull
# cost is per file (bench/dvc_share.py: 5,000 one-chunk files pull in 69 s, the same
# data in 151 shards in 4 s), while reading one keyframe still reads only its chunk.
SHARD_KEYFRAMES = 32


@dataclass(frozen=True)
class ViewSpec:
    """How one view's input was made from the original frame.

    The frame (W0 x H0) is optionally flipped, resized so that its short side is
    ``scale`` and placed at ``valid[:2]`` inside a zero canvas of ``input_size``.
    Feature map pixel (i, j) covers input pixels ``[j*stride, (j+1)*stride)``.
    """

    name: str
    scale: int
    flip: bool
    input_size: tuple[int, int]            # (W, H) of the padded network input
    valid: tuple[int, int, int, int]       # (x0, y0, x1, y1) of the image inside the input
    feature_stride: float                  # input pixels per feature-map pixel

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ViewSpec:
        return cls(d["name"], int(d["scale"]), bool(d["flip"]), tuple(d["input_size"]),
                   tuple(d["valid"]), float(d["feature_stride"]))


@dataclass(frozen=True)
class FeatureSpec:
    """What produced a store: needed to reproduce it or to match it at demo time."""

    backbone: str
    weights: str                  # weights name, file path, or "random-init(seed=N)"
    random_init: bool
    clip_frames: int
    clip_stride: int
    short_side: int
    channels: int
    views: tuple[str, ...] = field(default=())
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["views"] = list(self.views)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        keys = cls.__dataclass_fields__
        d = {k: v for k, v in d.items() if k in keys}
        d["views"] = tuple(d.get("views", ()))
        return cls(**d)


def boxes_to_input(boxes: np.ndarray, view: ViewSpec) -> np.ndarray:
    """Map normalised original-frame boxes (N, 4) to network-input pixels of ``view``.

    A flipped view mirrors x first (x1' = 1 - x2, x2' = 1 - x1).  Use
    ``spatial_scale = 1 / view.feature_stride`` with roi_align on the result.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    if view.flip:
        boxes[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
    x0, y0, x1, y1 = view.valid
    boxes[:, [0, 2]] = x0 + boxes[:, [0, 2]] * (x1 - x0)
    boxes[:, [1, 3]] = y0 + boxes[:, [1, 3]] * (y1 - y0)
    return boxes


def open_store(url: str, mode: str = "r", kind: str = KIND) -> zarr.Group:
    """Open (or with mode 'a'/'w' create) a store at a local path or fsspec URL."""
    try:
        root = zarr.open_group(str(url), mode=mode, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise ArtifactError(url, f"no Zarr store here ({err.__class__.__name__})") from None
    except (OSError, ValueError) as err:    # unreadable, corrupt metadata, unknown protocol
        if mode != "r":
            raise
        raise ArtifactError(url, f"cannot read the store ({err.__class__.__name__}: "
                            f"{str(err)[:200]})") from None
    meta = root.attrs.get("acar")
    if meta is None and mode != "r":
        root.attrs["acar"] = {"kind": kind, "version": VERSION}
    elif meta is None or meta.get("kind") != kind:
        raise ArtifactError(url, f"not an acar {kind} store (root attrs: {meta})")
    return root


def _is_view_layout(arr: zarr.Array) -> bool:
    """Whether ``arr`` has the codecs that :meth:`FeatureStore.create_view` writes."""
    layout = [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, *arr.shape[1:]],
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                   {"name": "zstd", "configuration": {"level": 0, "checksum": False}}],
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                         {"name": "crc32c"}],
        "index_location": "end"}}]
    return json.loads(json.dumps(arr.metadata.to_dict().get("codecs"))) == layout


class RowReader:
    """Rows of one view array (K, ...): ``reader[start:stop]``, ``reader[k]``.

    A view in the layout that :meth:`FeatureStore.create_view` writes, in a local store,
    is decoded here directly: a shard's index is read once, then a range of rows is one
    file read and a zstd decode per row.  zarr-python awaits a file read and a decode
    per chunk, about 3x the CPU per keyframe (``bench/train.py``).  Other arrays and
    stores are read through zarr.
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

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``."""
        if not self.rows or stop <= start:
            return np.asarray(self.arr[start:stop])
        arr, rows = self.arr, self.rows
        out = np.full((stop - start, *arr.shape[1:]), arr.metadata.fill_value,
                      arr.dtype.newbyteorder("<"))
        for shard in range(start // rows, (stop - 1) // rows + 1):
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
                data = f.read(int((index[stored, 0] + index[stored, 1]).max()) - base)
            for r, (offset, nbytes) in zip(range(lo, hi), index, strict=True):
                if offset >= 0:                     # little-endian bytes, decoded in place
                    self._zstd.decode(data[offset - base:offset - base + nbytes],
                                      out=out[r - start])
        return out

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


class FeatureStore:
    """Read/write access to a feature (or bank) store; one object per open store."""

    def __init__(self, url: str, mode: str = "r", kind: str = KIND):
        self.url, self.kind = str(url), kind
        self.root = open_store(url, mode, kind)

    # ---- reading ------------------------------------------------------------------
    def videos(self, complete_only: bool = True) -> list[str]:
        names = sorted(name for name, _ in self.root.groups())
        return [v for v in names if not complete_only or self.is_complete(v)]

    def is_complete(self, video: str) -> bool:
        try:
            return bool(self.root[video].attrs.get("acar", {}).get("complete", False))
        except KeyError:
            return False

    def attrs(self, video: str) -> dict[str, Any]:
        return dict(self.group(video).attrs["acar"])

    def spec(self, video: str) -> FeatureSpec:
        return FeatureSpec.from_dict(self.attrs(video))

    def group(self, video: str) -> zarr.Group:
        try:
            return self.root[video]
        except KeyError:
            raise ArtifactError(self.url, f"video '{video}' is not in the store") from None

    def timestamps(self, video: str) -> np.ndarray:
        return np.asarray(self.group(video)["timestamps"][:], dtype=np.int32)

    def view(self, video: str, view: str) -> ViewSpec:
        return ViewSpec.from_dict(self.group(video)[view].attrs["acar"])

    def read(self, video: str, view: str, index: int | slice | None = None) -> np.ndarray:
        arr = self.group(video)[view]
        return np.asarray(arr[:] if index is None else arr[index])

    # ---- writing ------------------------------------------------------------------
    def begin_video(self, video: str, timestamps: np.ndarray, attrs: dict[str, Any]
                    ) -> zarr.Group:
        """(Re)create the group of ``video``, marked incomplete."""
        if video in self.root:
            del self.root[video]
        grp = self.root.create_group(video)
        grp.attrs["acar"] = {**attrs, "complete": False}
        ts = np.asarray(timestamps, dtype=np.int32)
        grp.create_array("timestamps", shape=ts.shape, dtype="int32", chunks=(max(len(ts), 1),))
        grp["timestamps"][:] = ts
        return grp

    def create_view(self, video: str, view: ViewSpec, shape: tuple[int, ...],
                    dtype: str = "float16") -> zarr.Array:
        """An array of ``shape`` (K, ...): one chunk per keyframe, in shards of
        :data:`SHARD_KEYFRAMES` keyframes (write whole shards where you can)."""
        grp = self.group(video)
        chunks = (1, *shape[1:])
        shards = (max(1, min(shape[0], SHARD_KEYFRAMES)), *shape[1:])
        arr = grp.create_array(view.name, shape=shape, chunks=chunks, shards=shards,
                               dtype=dtype, fill_value=0)
        arr.attrs["acar"] = view.to_dict()
        return arr

    def finish_video(self, video: str, **extra: Any) -> None:
        grp = self.group(video)
        grp.attrs["acar"] = {**dict(grp.attrs["acar"]), **extra, "complete": True}

    # ---- checking (reads metadata only; never writes) ----------------------------------
    def check(self, expected: Mapping[str, np.ndarray | None] | None = None,
              threads: int = 16) -> StoreCheck:
        """Is every expected video present, complete and consistent with the layout?

        ``expected`` maps video_id -> the keyframe timestamps it should hold (None: any);
        None checks every video group of the store.  Complete groups must have the
        attributes, arrays, dtypes and shapes of the layout, every shard stored, and the
        same FeatureSpec as the store's (the one most of its videos record).  Reads
        metadata only, ``threads`` videos at a time (remote stores are latency-bound).
        """
        present = set(self.videos(complete_only=False))
        if expected is None:
            expected = dict.fromkeys(present)
        report = StoreCheck(self.url, missing=sorted(set(expected) - present),
                            unexpected=sorted(present - set(expected)))
        found = sorted(present & set(expected))
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(self._check_video, found, [expected[v] for v in found]))
        specs: dict[str, FeatureSpec] = {}
        for video, (problems, spec) in zip(found, results, strict=True):
            if problems is None:
                report.incomplete.append(video)
            elif problems:
                report.inconsistent[video] = problems
            else:
                report.complete.append(video)
            if spec is not None:
                specs[video] = spec
        counts = Counter(json.dumps(s.to_dict(), sort_keys=True) for s in specs.values())
        if len(counts) > 1:
            key, n = counts.most_common(1)[0]
            store_spec = FeatureSpec.from_dict(json.loads(key))
            for video, spec in specs.items():
                if spec != store_spec:
                    report.flag(video, f"spec differs from the store's (that of {n} of "
                                f"{len(specs)} videos): {_spec_difference(spec, store_spec)}")
        return report

    def _check_video(self, video: str, timestamps: np.ndarray | None
                     ) -> tuple[list[str] | None, FeatureSpec | None]:
        """(problems, spec) of a video group; problems None: not marked complete."""
        try:
            grp = self.group(video)
            meta = dict(grp.attrs.get("acar", {}))
        except Exception as err:  # noqa: BLE001 - a corrupt group is a finding
            return [f"unreadable ({err.__class__.__name__}: {str(err)[:200]})"], None
        if not meta.get("complete", False):
            return None, None
        try:
            spec = FeatureSpec.from_dict(meta)
        except (TypeError, ValueError) as err:
            return [f"attributes are not a FeatureSpec ({err})"], None
        try:
            return _group_problems(grp, meta, spec, timestamps), spec
        except Exception as err:  # noqa: BLE001
            return [f"unreadable ({err.__class__.__name__}: {str(err)[:200]})"], spec


@dataclass
class StoreCheck:
    """The result of :meth:`FeatureStore.check`: each expected video is in one list."""

    url: str
    complete: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    inconsistent: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)   # in the store, not expected

    @property
    def ok(self) -> bool:
        return not (self.missing or self.incomplete or self.inconsistent)

    def flag(self, video: str, problem: str) -> None:
        """Record a problem of ``video`` (a complete video becomes inconsistent)."""
        if video in self.complete:
            self.complete.remove(video)
        self.inconsistent.setdefault(video, []).append(problem)

    def lines(self) -> list[str]:
        """One line per problem, ``<video>: <problem>``, sorted by video."""
        found = [(v, "missing (no group in the store)") for v in self.missing]
        found += [(v, "incomplete (not marked complete: an interrupted or running write)")
                  for v in self.incomplete]
        found += [(v, p) for v, ps in self.inconsistent.items() for p in ps]
        return [f"{v}: {p}" for v, p in sorted(found, key=lambda vp: vp[0])]

    def summary(self) -> str:
        line = (f"{self.url}: {len(self.complete)} videos complete, {len(self.missing)} "
                f"missing, {len(self.incomplete)} incomplete, {len(self.inconsistent)} "
                "inconsistent")
        if self.unexpected:
            line += f" ({len(self.unexpected)} other videos in the store not checked)"
        return line


def _group_problems(grp: zarr.Group, meta: dict, spec: FeatureSpec,
                    timestamps: np.ndarray | None) -> list[str]:
    """What is wrong with the layout of a complete video group; [] if nothing.

    ``timestamps``: the keyframes the group should hold (None: not compared)."""
    problems = []
    size, fps = meta.get("frame_size"), meta.get("fps")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(x, int) and x > 0 for x in size)):
        problems.append(f"frame_size {size!r} is not [W, H]")
    if not (isinstance(fps, int | float) and fps > 0):
        problems.append(f"fps {fps!r} is not a positive number")
    ts = grp.get("timestamps")
    if not isinstance(ts, zarr.Array):
        return [*problems, "no timestamps array"]
    stamps = np.asarray(ts[:])
    if ts.dtype != np.int32 or ts.ndim != 1:
        problems.append(f"timestamps are {ts.dtype} {ts.shape}, expected int32 (K,)")
    elif np.any(np.diff(stamps) <= 0):
        problems.append("timestamps are not strictly increasing")
    if timestamps is not None and not np.array_equal(stamps, timestamps):
        problems.append(_keyframe_difference(stamps, np.asarray(timestamps)))
    if not spec.views:
        problems.append("its spec lists no views")
    for name in spec.views:
        problems += [f"view {name}: {p}"
                     for p in _view_problems(grp.get(name), name, len(stamps), spec.channels)]
    return problems


def _view_problems(arr: Any, name: str, k: int, channels: int) -> list[str]:
    if not isinstance(arr, zarr.Array):
        return ["array missing"]
    problems = []
    if arr.dtype != np.float16:
        problems.append(f"dtype {arr.dtype}, expected float16")
    try:
        view = ViewSpec.from_dict(arr.attrs["acar"])
        w, h = (round(x / view.feature_stride) for x in view.input_size)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        return [*problems, f"no valid ViewSpec attributes ({err.__class__.__name__}: {err})"]
    if view.name != name:
        problems.append(f"its ViewSpec is named {view.name!r}")
    if tuple(arr.shape) != (k, channels, h, w):
        problems.append(f"shape {tuple(arr.shape)}, expected {(k, channels, h, w)} "
                        "(keyframes, channels, input size / feature_stride)")
    outer = arr.shards or arr.chunks
    total = math.prod(math.ceil(n / s) for n, s in zip(arr.shape, outer, strict=True))
    per_shard = math.prod(s // c for s, c in zip(outer, arr.chunks, strict=True))
    stored = arr.nchunks_initialized // per_shard
    if stored < total:
        problems.append(f"{total - stored} of {total} shards not stored (would read as zeros)")
    return problems


def _few(values: np.ndarray, n: int = 5) -> str:
    shown = ",".join(str(int(v)) for v in values[:n])
    return shown + (f",... ({len(values)})" if len(values) > n else "")


def _keyframe_difference(stored: np.ndarray, expected: np.ndarray) -> str:
    line = f"keyframes differ: {len(stored)} stored, {len(expected)} expected"
    if len(lacking := np.setdiff1d(expected, stored)):
        line += f"; t={_few(lacking)} not stored"
    if len(extra := np.setdiff1d(stored, expected)):
        line += f"; t={_few(extra)} not expected"
    return line


def _spec_difference(spec: FeatureSpec, ref: FeatureSpec) -> str:
    a, b = _flat(spec.to_dict()), _flat(ref.to_dict())
    return ", ".join(f"{k} {a.get(k)!r} (store: {b.get(k)!r})"
                     for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))


def _flat(d: dict, prefix: str = "") -> dict:
    """{"extra": {"amp": False}} -> {"extra.amp": False}"""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
