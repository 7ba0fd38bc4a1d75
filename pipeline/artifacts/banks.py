"""Feature banks: long-term context per video, in a Zarr v3 store of kind ``bank``.

Same store rules as :mod:`pipeline.artifacts.features` (root attrs
``{"acar": {"kind": "bank", "version": 1}}``, one group per video, ``complete`` set last,
one writer per video group, so ``--shard i/N`` is safe).  A store holds one bank kind::

    bank.zarr/<video_id>/     attrs acar: {"kind": "lfb" | "acfb", "spec": {...},
                                           "complete": bool, "bytes": int, "bytes_stored": int}
        timestamps            int32 (K,)          keyframes of the video (the feature store's)
        actor_timestamps      int32 (M,)          keyframe second of each banked actor, ascending
        actor_index           int32 (M,)          actor number within its keyframe: 0, 1, ...
        boxes                 float32 (M, 4)      normalised original-frame boxes
        scores                float32 (M,)        detection score (1.0 for a GT box)
        from_gt               bool (M,)           GT box (train videos) or detection
        vectors               float16 (M, C)      lfb: actor vectors A_i (RoIAlign + max-pool)
        maps                  float16 (M, d, h, w)  acfb: first-order actor-context maps F_i
        scene                 float16 (K, C, H, W)  acfb built with ``scene``: each keyframe's
                                                    context map (the scene), by ``timestamps``

A banked actor's key is ``(video, actor_timestamps[r], actor_index[r])``.  Rows are sorted
by (timestamp, actor), so the actors of a time window are one contiguous row range
(:func:`window_rows`).  ``spec`` records everything that made the group (features, view,
boxes, threshold; for acfb the checkpoint's weight hash and the pool); a complete group is
reused only when its spec equals the current one.

:class:`pipeline.bank_reader.BankReader` is the run-time side: opened once per training or
evaluation run, it gives a batch of keyframes their bank slots (the padded tensors + mask the
bank heads take).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from . import ArtifactError
from .features import CHUNK_KEYS, FeatureStore

STORE_KIND = "bank"
KINDS = ("lfb", "acfb", "memory")
DATA = {"lfb": "vectors", "acfb": "maps", "memory": "vectors"}     # the data array of each kind
INDEX = ("actor_timestamps", "actor_index", "boxes", "scores", "from_gt")
CHUNK_BYTES = 4 << 20                          # target size of one data chunk
# Zarr v3 dimension_names of each array (xarray reads them; ``timestamps``: ``keyframe``)
DIMS = {"actor_timestamps": ["actor"], "actor_index": ["actor"], "boxes": ["actor", "coord"],
        "scores": ["actor"], "from_gt": ["actor"], "vectors": ["actor", "channel"],
        "maps": ["actor", "channel", "y", "x"], "scene": ["keyframe", "channel", "y", "x"]}
SCENE = "scene"                                # acfb: the keyframes' context maps (optional)


def digest(*arrays: np.ndarray) -> str:
    """sha256 (16 hex digits) of arrays' dtypes, shapes and bytes: identifies a spec's inputs."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def window_rows(actor_timestamps: np.ndarray, t: int, window: int,
                exclude_current: bool = False) -> np.ndarray:
    """Rows of the actors at seconds ``[t - window, t + window]`` (clipped to the video by
    construction), optionally without those at ``t`` itself."""
    lo = int(np.searchsorted(actor_timestamps, t - window, side="left"))
    hi = int(np.searchsorted(actor_timestamps, t + window, side="right"))
    rows = np.arange(lo, hi)
    if exclude_current:
        rows = rows[actor_timestamps[lo:hi] != t]
    return rows


@dataclass
class VideoBank:
    """One video's bank: index arrays in memory, ``data`` loaded or a lazy Zarr array."""

    video: str
    kind: str
    timestamps: np.ndarray           # (K,)
    actor_timestamps: np.ndarray     # (M,)
    actor_index: np.ndarray          # (M,)
    boxes: np.ndarray                # (M, 4)
    scores: np.ndarray               # (M,)
    from_gt: np.ndarray              # (M,)
    data: Any                        # (M, C) or (M, d, h, w): np.ndarray or zarr.Array
    scene: Any = None                # (K, C, H, W) context maps by keyframe, or None

    def keys(self) -> list[tuple[str, int, int]]:
        return [(self.video, int(t), int(a)) for t, a in zip(self.actor_timestamps,
                                                            self.actor_index, strict=True)]


class BankStore:
    """Read/write access to a bank store (a :class:`FeatureStore` of kind ``bank``)."""

    def __init__(self, url: str, mode: str = "r"):
        self.url = str(url)
        self.store = FeatureStore(url, mode, kind=STORE_KIND)

    # ---- reading ------------------------------------------------------------------
    def videos(self, complete_only: bool = True) -> list[str]:
        return self.store.videos(complete_only)

    def is_complete(self, video: str) -> bool:
        return self.store.is_complete(video)

    def is_current(self, video: str) -> bool:
        """Complete, in today's layout (``features.LAYOUT``): reusable as it is."""
        return self.store.is_current(video)

    def attrs(self, video: str) -> dict[str, Any]:
        return self.store.attrs(video)

    def spec(self, video: str) -> dict[str, Any]:
        return dict(self.attrs(video).get("spec", {}))

    def read_video(self, video: str, in_memory: bool = True) -> VideoBank:
        if not self.is_complete(video):
            raise ArtifactError(self.url, f"video '{video}' is not in the bank (missing or "
                                          "incomplete: rebuild it with `acar bank`)")
        grp = self.store.group(video)
        kind = self.attrs(video).get("kind")
        if kind not in KINDS:
            raise ArtifactError(self.url, f"video '{video}': unknown bank kind {kind!r}")
        try:
            arrays = {name: np.asarray(grp[name][:]) for name in ("timestamps", *INDEX)}
            data = grp[DATA[kind]]
        except KeyError as err:
            raise ArtifactError(self.url, f"video '{video}': missing array {err}") from None
        m = len(arrays["actor_timestamps"])
        if any(len(arrays[name]) != m for name in INDEX) or data.shape[0] != m:
            raise ArtifactError(self.url, f"video '{video}': arrays of different lengths")
        if m and np.any(np.diff(arrays["actor_timestamps"]) < 0):
            raise ArtifactError(self.url, f"video '{video}': actor_timestamps are not sorted")
        scene = grp[SCENE] if SCENE in grp else None
        if scene is not None and scene.shape[0] != len(arrays["timestamps"]):
            raise ArtifactError(self.url, f"video '{video}': scene maps are not one per keyframe")
        if scene is not None and in_memory:
            scene = np.asarray(scene[:])
        return VideoBank(video, kind, *(arrays[n] for n in ("timestamps", *INDEX)),
                         np.asarray(data[:]) if in_memory else data, scene)

    def size(self, videos: list[str] | None = None) -> dict[str, int | float]:
        """Keyframes, actors and bytes (raw float16 data + index, and stored) of ``videos``."""
        out = {"videos": 0, "keyframes": 0, "actors": 0, "bytes": 0, "bytes_stored": 0}
        for video in self.videos() if videos is None else videos:
            attrs = self.attrs(video)
            grp = self.store.group(video)
            out["videos"] += 1
            out["keyframes"] += int(grp["timestamps"].shape[0])
            out["actors"] += int(grp["actor_timestamps"].shape[0])
            out["bytes"] += int(attrs.get("bytes", 0))
            out["bytes_stored"] += int(attrs.get("bytes_stored", 0))
        k = max(out["keyframes"], 1)
        return {**out, "bytes_per_keyframe": out["bytes"] / k,
                "stored_bytes_per_keyframe": out["bytes_stored"] / k}

    # ---- writing ------------------------------------------------------------------
    def begin_video(self, video: str, kind: str, timestamps: np.ndarray, spec: dict,
                    index: dict[str, np.ndarray], data_shape: tuple[int, ...]) -> zarr.Array:
        """(Re)create the group of ``video`` (incomplete) with its index arrays; returns the
        empty float16 data array (M, ...) for the caller to fill, rows in index order."""
        m = len(index["actor_timestamps"])
        if set(index) != set(INDEX) or any(len(a) != m for a in index.values()):
            raise ValueError(f"bank index needs {INDEX}, all of length M")
        if m and np.any(np.diff(index["actor_timestamps"]) < 0):
            raise ValueError("bank rows must be sorted by timestamp")
        grp = self.store.begin_video(video, timestamps, {"kind": kind, "spec": spec})
        dtypes = {"actor_timestamps": "int32", "actor_index": "int32", "boxes": "float32",
                  "scores": "float32", "from_gt": "bool"}
        for name, dtype in dtypes.items():
            a = np.asarray(index[name], dtype=dtype)
            arr = grp.create_array(name, shape=a.shape, dtype=dtype,
                                   chunks=(max(m, 1), *a.shape[1:]),
                                   dimension_names=DIMS[name], chunk_key_encoding=CHUNK_KEYS)
            if a.size:
                arr[...] = a
        row_bytes = 2 * int(np.prod(data_shape[1:]))
        rows = max(1, min(m, CHUNK_BYTES // max(row_bytes, 1)))
        dims = DIMS[DATA[kind]] if len(data_shape) == len(DIMS[DATA[kind]]) else \
            ["actor", *(f"dim_{i}" for i in range(1, len(data_shape)))]
        return grp.create_array(DATA[kind], shape=data_shape, dtype="float16",
                                chunks=(rows, *data_shape[1:]), fill_value=0,
                                dimension_names=dims, chunk_key_encoding=CHUNK_KEYS)

    def write_scene(self, video: str, maps: np.ndarray) -> None:
        """The keyframes' context maps (K, C, H, W) of an incomplete group, as float16."""
        grp = self.store.group(video)
        arr = grp.create_array(SCENE, shape=maps.shape, dtype="float16",
                               chunks=maps.shape, dimension_names=DIMS[SCENE])
        if maps.size:
            arr[...] = maps.astype(np.float16)

    def finish_video(self, video: str) -> None:
        """Record the group's sizes, then mark it complete (last)."""
        grp = self.store.group(video)
        arrays = [grp[name] for name, _ in grp.arrays()]
        self.store.finish_video(video, bytes=sum(int(a.nbytes) for a in arrays),
                                bytes_stored=sum(int(a.nbytes_stored()) for a in arrays))
