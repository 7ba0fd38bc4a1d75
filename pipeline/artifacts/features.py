"""Feature stores: a Zarr v3 store ``features.zarr`` with one group per video.

Layout::

    features.zarr/                      root attrs: {"acar": {"kind": "features", "version": 1}}
      <video_id>/                       group attrs: {"acar": {**FeatureSpec, "complete": bool,
                                                               "frame_size": [W, H], "fps": float}}
        timestamps                      int32 (K,)            keyframe seconds
        <view>                          float16 (K, C, H, W)  one chunk per keyframe,
                                        stored in shards of SHARD_KEYFRAMES keyframes
                                        attrs: {"acar": ViewSpec}
                                        (or int8 (K, C, H, W): see below)
        <view>_scale                    float16 (K, C)  only beside an int8 view

``extract.temporal: N`` keeps N temporal bins of the backbone's map instead of its mean:
the view is then ``(K, C, N, H, W)`` (dimension names ``keyframe, channel, time, y, x``)
and the group's spec records ``extra.temporal = N`` (:func:`time_bins`; part of the
features' identity, so a store of another ``temporal`` is rebuilt, and a checkpoint
trained on one is refused on the other).  ``temporal: mean`` (the default) records nothing
and is the (K, C, H, W) layout above, byte for byte.  Readers give a head that reads no
time the mean of the bins (:class:`pipeline.keyframes.FeatureCache`); a head that reads
time (``Head.temporal``) refuses a store without bins.

``extract.dtype: int8`` stores each view quantised: ``q = round(x / scale)`` in
[-127, 127] with one float16 ``scale = max|x| / 127`` per (keyframe, channel), so that a
value is ``q * scale`` (:func:`quantise`, :func:`dequantise`).  The group's spec records
``extra.dtype = "int8"`` and the view's attrs ``acar.encoding``; every reader (``read``,
:class:`pipeline.keyframes.FeatureCache`, the audit) dequantises, so the heads always see
float16 maps.  A float16 store records no ``dtype`` (stores made before the option match).

A *view* is one test-time variant of the input (``s256``, ``s256_flip``, ``s288``…).
``complete`` is set last, so an interrupted run leaves an incomplete group that the
next run rebuilds.  Each video group is written by exactly one process, which is what
makes ``--shard i/N`` safe for concurrent writers.  Banks (``pipeline.artifacts.banks``)
reuse this module's store helpers.

This module is the format and its plain reader and writer.  Training's fast reader of runs
of keyframes (``RowReader``) is in :mod:`pipeline.keyframes`; the audit of a store
(``acar extract --check``) in :mod:`pipeline.extract_check`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zarr

from . import ArtifactError

KIND = "features"
VERSION = 1
# The arrays' format inside a video group (group attrs ``layout``), bumped when it changes
# (2: zarr dimension_names; 3: the canvas is no longer a square, each side is padded to a
# multiple of pad_multiple on its own: the maps have the video's aspect ratio and a learned
# backbone's border cells other values; 4: flat chunk keys).  A group of another layout is
# rebuilt, never reused, so a persisted store always equals a fresh build of the same inputs.
LAYOUT = 4
# FeatureSpec.extra["canvas"]: how extract padded each frame.  "per-side": right and bottom,
# each side up to a multiple of pad_multiple (ViewSpec.input_size, not square).  A spec
# without the key (older stores and checkpoints) padded to a square, whose side was a
# multiple of pad_multiple: a learned backbone's maps differ there near the image's edges.
CANVAS = "per-side"
# What a spec without an extra key meant (a checkpoint's spec against a store's: a head
# trained on a square canvas is refused on per-side features, and the error says "square").
EXTRA_ABSENT = {"canvas": "square"}
# Chunk files named ``c.0.0.0`` beside the array's zarr.json, not ``c/0/0/0``: one directory
# per array instead of one per chunk index level.  DVC walks every directory of a directory
# dep once per stage that names it (features.zarr: 23 stages), and the walk, not the
# hashing, is most of a no-op `dvc status` (bench/dvc_noop.py).
CHUNK_KEYS = {"name": "default", "separator": "."}
# Zarr v3 sharding codec: each file holds this many keyframe chunks.  DVC's push/pull
# cost is per file (bench/dvc_share.py: 5,000 one-chunk files pull in 69 s, the same
# data in 151 shards in 4 s), while reading one keyframe still reads only its chunk.
SHARD_KEYFRAMES = 32
DTYPES = ("float16", "int8", "float32")  # extract.dtype: how a view's values are stored
QMAX = 127                       # int8: symmetric, q in [-QMAX, QMAX]
TEMPORAL_MEAN = "mean"           # extract.temporal: the map's mean over time (no time axis)
MAX_TIME_BINS = 64


def parse_temporal(value: object, where: object = "extract.temporal") -> int | None:
    """``extract.temporal`` -> None for ``mean`` (the default), else the number of time bins
    N >= 1 (an int, or its digits from the CLI); anything else is a one-line
    :class:`ArtifactError` naming ``where``."""
    if value is None or value == TEMPORAL_MEAN:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIME_BINS:
        raise ArtifactError(where, f"temporal must be 'mean' or a number of time bins in "
                            f"1..{MAX_TIME_BINS}, got {value!r}")
    return value


@dataclass(frozen=True)
class ViewSpec:
    """How one view's input was made from the original frame.

    The frame (W0 x H0) is optionally flipped, resized so that its short side is
    ``scale`` and placed at ``valid[:2]`` inside a zero canvas of ``input_size`` (each side
    a multiple of the stride; square only in stores of ``LAYOUT`` < 3).
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

    @property
    def time_bins(self) -> int | None:
        """N of a store extracted with ``extract.temporal: N``; None: the mean over time."""
        return time_bins(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        keys = cls.__dataclass_fields__
        d = {k: v for k, v in d.items() if k in keys}
        d["views"] = tuple(d.get("views", ()))
        return cls(**d)


def time_bins(spec: FeatureSpec | dict) -> int | None:
    """The number of time bins of a store's views (``extra.temporal``), None when the views
    are the map's mean over time: (K, C, H, W) rather than (K, C, N, H, W)."""
    extra = spec.extra if isinstance(spec, FeatureSpec) else spec.get("extra", {})
    n = (extra or {}).get("temporal")
    return None if n is None else int(n)


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


def scale_name(view: str) -> str:
    """The array beside an int8 view that holds its (K, C) float16 scales."""
    return f"{view}_scale"


def quantise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, ...) float maps -> (B, C, ...) int8 ``q`` and (B, C) float16 ``scale``:
    symmetric per (keyframe, channel), ``x ~ q * scale``, ``|q| <= QMAX``.  An all-zero
    channel (or one too small for a float16 scale) has scale 0 and q 0."""
    x = np.asarray(x, np.float32)
    flat = x.reshape(*x.shape[:2], -1)                                   # (B, C, HW)
    scale = (np.abs(flat).max(axis=2, initial=0.0) / QMAX).astype(np.float16)   # (B, C)
    s = scale.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(flat / np.where(s > 0, s, 1)), 0)
    q = np.clip(q, -QMAX, QMAX).astype(np.int8).reshape(x.shape)
    return q, scale


def dequantise(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(B, C, ...) int8 and (B, C) scales (or (C, ...) and (C,)) -> float16 maps."""
    q, scale = np.asarray(q), np.asarray(scale, np.float32)
    s = scale.reshape(*scale.shape, *(1,) * (q.ndim - scale.ndim))
    return (q.astype(np.float32) * s).astype(np.float16)


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


def dimension_names(grp: zarr.Group, name: str, shape: tuple[int, ...]) -> list[str]:
    """Zarr v3 ``dimension_names`` of a view array (xarray reads them): ``keyframe, channel,
    [time,] y, x``.  A name that another array of the group already uses with another size
    (a view of another scale) gets the view's name appended (``y_s288``), as one xarray
    Dataset needs one size per dimension."""
    inner = {4: ["y", "x"], 5: ["time", "y", "x"]}.get(
        len(shape), [f"dim_{i}" for i in range(2, len(shape))])
    names = ["keyframe", "channel", *inner][:len(shape)]
    sizes: dict[str, int] = {}
    for _, arr in grp.arrays():
        sizes.update(zip(arr.metadata.dimension_names or (), arr.shape, strict=False))
    return [n if sizes.get(n, s) == s else f"{n}_{name}" for n, s in zip(names, shape, strict=True)]


class FeatureStore:
    """Read/write access to a feature (or bank) store; one object per open store."""

    def __init__(self, url: str, mode: str = "r", kind: str = KIND):
        self.url, self.kind = str(url), kind
        self.root = open_store(url, mode, kind)
        # read-only: each video's group and arrays are opened once (every opening reads
        # metadata: 3-5 s of a training run's start when each read opened them again)
        self.read_only = mode == "r"
        self._groups: dict[str, zarr.Group] = {}
        self._arrays: dict[str, dict[str, zarr.Array]] = {}

    # ---- reading ------------------------------------------------------------------
    def videos(self, complete_only: bool = True) -> list[str]:
        groups = dict(self.root.groups())     # one listing opens them all (concurrently)
        if self.read_only:
            self._groups.update(groups)
        return [v for v in sorted(groups) if not complete_only or self.is_complete(v)]

    def _group(self, video: str) -> zarr.Group:
        """The group of ``video`` (KeyError: none), opened once when read-only."""
        if video in self._groups:
            return self._groups[video]
        grp = self.root[video]
        if self.read_only:
            self._groups[video] = grp
        return grp

    def array(self, video: str, name: str) -> zarr.Array:
        """Array ``name`` of ``video``'s group (KeyError: none); read-only, the group's
        arrays are all opened at its first array."""
        if not self.read_only:
            return self.group(video)[name]
        if video not in self._arrays:
            self._arrays[video] = dict(self.group(video).arrays())
        return self._arrays[video][name]

    def is_complete(self, video: str) -> bool:
        try:
            return bool(self._group(video).attrs.get("acar", {}).get("complete", False))
        except KeyError:
            return False

    def attrs(self, video: str) -> dict[str, Any]:
        return dict(self.group(video).attrs["acar"])

    def is_current(self, video: str) -> bool:
        """Complete and written in today's :data:`LAYOUT` (else a run rebuilds it)."""
        return self.is_complete(video) and self.attrs(video).get("layout") == LAYOUT

    def spec(self, video: str) -> FeatureSpec:
        return FeatureSpec.from_dict(self.attrs(video))

    def group(self, video: str) -> zarr.Group:
        try:
            return self._group(video)
        except KeyError:
            raise ArtifactError(self.url, f"video '{video}' is not in the store") from None

    def timestamps(self, video: str) -> np.ndarray:
        return np.asarray(self.array(video, "timestamps")[:], dtype=np.int32)

    def view(self, video: str, view: str) -> ViewSpec:
        return ViewSpec.from_dict(self.array(video, view).attrs["acar"])

    def read(self, video: str, view: str, index: int | slice | None = None) -> np.ndarray:
        """The float16 maps of ``view`` (dequantised if the store is int8)."""
        arr = self.array(video, view)
        index = slice(None) if index is None else index
        scale = self.scale(video, view)
        if scale is None:
            return np.asarray(arr[index])
        return dequantise(np.asarray(arr[index]), np.asarray(scale[index]))

    def scale(self, video: str, view: str) -> zarr.Array | None:
        """The (K, C) float16 scales of an int8 view; None for a float16 one."""
        if self.array(video, view).dtype != np.int8:
            return None
        try:
            return self.array(video, scale_name(view))
        except KeyError:
            raise ArtifactError(self.url, f"video '{video}': int8 view '{view}' has no "
                                f"'{scale_name(view)}' array") from None

    # ---- writing ------------------------------------------------------------------
    def begin_video(self, video: str, timestamps: np.ndarray, attrs: dict[str, Any]
                    ) -> zarr.Group:
        """(Re)create the group of ``video``, marked incomplete."""
        if video in self.root:
            del self.root[video]
        grp = self.root.create_group(video)
        grp.attrs["acar"] = {**attrs, "layout": LAYOUT, "complete": False}
        ts = np.asarray(timestamps, dtype=np.int32)
        grp.create_array("timestamps", shape=ts.shape, dtype="int32", chunks=(max(len(ts), 1),),
                         dimension_names=["keyframe"], chunk_key_encoding=CHUNK_KEYS)
        grp["timestamps"][:] = ts
        return grp

    def create_view(self, video: str, view: ViewSpec, shape: tuple[int, ...],
                    dtype: str = "float16") -> zarr.Array:
        """An array of ``shape`` (K, ...): one chunk per keyframe, in shards of
        :data:`SHARD_KEYFRAMES` keyframes (write whole shards where you can).  With
        ``dtype="int8"`` also its (K, C) float16 scales (:func:`scale_name`); fill both with
        :func:`write_rows`."""
        grp = self.group(video)

        def create(name: str, shape: tuple[int, ...], dtype: str) -> zarr.Array:
            chunks = (1, *shape[1:])
            shards = (max(1, min(shape[0], SHARD_KEYFRAMES)), *shape[1:])
            return grp.create_array(name, shape=shape, chunks=chunks, shards=shards,
                                    dtype=dtype, fill_value=0, chunk_key_encoding=CHUNK_KEYS,
                                    dimension_names=dimension_names(grp, name, shape))

        arr = create(view.name, shape, dtype)
        attrs = view.to_dict()
        if np.dtype(dtype) == np.int8:
            create(scale_name(view.name), shape[:2], "float16")
            attrs["encoding"] = {"dtype": "int8", "scale": scale_name(view.name),
                                 "scheme": "symmetric per (keyframe, channel)"}
        arr.attrs["acar"] = attrs
        return arr

    def write_rows(self, video: str, arr: zarr.Array, start: int, data: np.ndarray) -> None:
        """Write float maps ``data`` (B, C, ...) to rows ``[start, start + B)`` of view
        ``arr``: as float16, or quantised with their scales for an int8 view."""
        stop = start + len(data)
        if arr.dtype == np.int8:
            q, scale = quantise(data)
            self.group(video)[scale_name(arr.basename)][start:stop] = scale
            arr[start:stop] = q
        else:
            arr[start:stop] = data

    def remove_video(self, video: str) -> None:
        """Delete the group of ``video`` (complete or not), e.g. a video no longer in the input."""
        del self.root[video]

    def finish_video(self, video: str, **extra: Any) -> None:
        grp = self.group(video)
        grp.attrs["acar"] = {**dict(grp.attrs["acar"]), **extra, "complete": True}
