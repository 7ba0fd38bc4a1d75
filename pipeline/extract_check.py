"""``acar extract --check``: is a feature store complete and consistent?

Reads metadata only (``--values``: also every shard of every view, to find truncated or
corrupt shard files and non-finite values) and never writes; imports no torch, so it
starts in a moment on a login node.  A check that finds no video to check fails.
:func:`check_store` decides which videos should be there, as :mod:`pipeline.extract`
would; :func:`check_layout` audits each of them against the layout of
:mod:`pipeline.artifacts.features` and reports in a :class:`StoreCheck`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import zarr

from .artifacts.detections import read_detections
from .artifacts.features import FeatureSpec, FeatureStore, ViewSpec, dequantise, scale_name
from .shards import shard_items
from .video import fingerprint, list_videos


def check_store(out: str, detections: str | os.PathLike | None = None,
                videos_dir: str | os.PathLike | None = None,
                shard: tuple[int, int] = (0, 1), values: bool = False,
                allow_empty: bool = False, recursive: bool = False) -> StoreCheck:
    """Verify the feature store ``out`` (path or fsspec URL) without writing to it.

    The videos that should be there are those of the detections (with exactly their
    keyframes), else the files of ``videos_dir``, else the store's own groups; ``shard``
    keeps a 1/N of them.  Each must be present, complete and consistent with the layout
    and the store's spec; with ``videos_dir``, its video file must also be the one it
    was extracted from (else a rerun of extract would redo it).  ``values``: also read
    every shard of every view (finds truncated or corrupt shard files and non-finite
    values).  A check that finds no video to check fails unless ``allow_empty``.
    """
    store = FeatureStore(out)
    paths = list_videos(videos_dir, recursive) if videos_dir is not None else {}
    expected: dict[str, np.ndarray | None] | None = None
    if detections is not None:
        dets, _ = read_detections(detections, allow_empty=allow_empty)
        expected = {v: np.unique(g["timestamp"]).astype(np.int32)
                    for v, g in dets.groupby("video_id")}
    elif videos_dir is not None:
        expected = dict.fromkeys(paths)
    if shard != (0, 1):
        names = store.videos(complete_only=False) if expected is None else list(expected)
        expected = {v: (expected or {}).get(v) for v in shard_items(names, shard)}
    report = check_layout(store, expected, values=values)
    report.allow_empty = allow_empty
    for video in list(report.complete):
        recorded = store.attrs(video).get("source")
        if video in paths and recorded is not None and recorded != fingerprint(paths[video]):
            report.flag(video, f"{paths[video]} is not the file it was extracted from "
                        "(a rerun of extract would redo it)")
    return report


def check_layout(store: FeatureStore, expected: Mapping[str, np.ndarray | None] | None = None,
                 threads: int = 16, values: bool = False) -> StoreCheck:
    """Is every expected video present, complete and consistent with the layout?

    ``expected`` maps video_id -> the keyframe timestamps it should hold (None: any);
    None checks every video group of the store.  Complete groups must have the
    attributes, arrays, dtypes and shapes of the layout, every shard stored, and the
    same FeatureSpec as the store's (the one most of its videos record).  Reads
    metadata only, ``threads`` videos at a time (remote stores are latency-bound);
    ``values`` also reads the data (:func:`_value_problems`).
    """
    present = set(store.videos(complete_only=False))
    if expected is None:
        expected = dict.fromkeys(present)
    report = StoreCheck(store.url, missing=sorted(set(expected) - present),
                        unexpected=sorted(present - set(expected)))
    found = sorted(present & set(expected))
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(partial(_check_video, store, values=values), found,
                                [expected[v] for v in found]))
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

def _check_video(store: FeatureStore, video: str, timestamps: np.ndarray | None,
                 values: bool = False) -> tuple[list[str] | None, FeatureSpec | None]:
    """(problems, spec) of a video group; problems None: not marked complete."""
    try:
        grp = store.group(video)
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
        problems = _group_problems(grp, meta, spec, timestamps)
        if values:
            stamps = np.asarray(grp["timestamps"][:])
            for name in spec.views:
                if isinstance(arr := grp.get(name), zarr.Array):
                    scale = grp.get(scale_name(name)) if arr.dtype == np.int8 else None
                    problems += [f"view {name}: {p}"
                                 for p in _value_problems(arr, stamps, scale)]
        return problems, spec
    except Exception as err:  # noqa: BLE001
        return [f"unreadable ({err.__class__.__name__}: {str(err)[:200]})"], spec


def _value_problems(arr: zarr.Array, stamps: np.ndarray, scale: Any = None) -> list[str]:
    """Read ``arr`` one shard file at a time: shards that cannot be read (truncated,
    corrupt) and keyframes holding a non-finite value, one line each.  ``scale``: the
    scales of an int8 view (its values are checked dequantised)."""
    rows = (arr.shards or arr.chunks)[0]
    problems, nonfinite = [], []
    for a in range(0, arr.shape[0], rows):
        b = min(a + rows, arr.shape[0])
        try:
            block = np.asarray(arr[a:b])
            if isinstance(scale, zarr.Array):
                block = dequantise(block, np.asarray(scale[a:b]))
        except Exception as err:  # noqa: BLE001 - any decoding failure is a finding
            first = (str(err).splitlines() or [""])[0][:120]
            problems.append(f"shard of keyframes {a}-{b - 1} is unreadable (truncated or "
                            f"corrupt: {err.__class__.__name__}: {first})")
            continue
        bad = ~np.isfinite(block.reshape(b - a, -1)).all(axis=1)
        nonfinite += [a + int(k) for k in np.flatnonzero(bad)]
    if nonfinite:
        ts = stamps[nonfinite] if len(stamps) == arr.shape[0] else np.asarray(nonfinite)
        problems.append(f"non-finite values (nan or inf) at {len(nonfinite)} keyframes: "
                        f"t={_few(ts)}")
    return problems


@dataclass
class StoreCheck:
    """The result of :func:`check_layout`: each expected video is in one list."""

    url: str
    complete: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    inconsistent: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)   # in the store, not expected
    allow_empty: bool = False                              # no video to check is fine

    @property
    def empty(self) -> bool:
        """No video was expected (an empty store, detections or videos folder)."""
        return not (self.complete or self.missing or self.incomplete or self.inconsistent)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.incomplete or self.inconsistent
                    or (self.empty and not self.allow_empty))

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
        lines = [f"{v}: {p}" for v, p in sorted(found, key=lambda vp: vp[0])]
        if self.empty and not self.allow_empty:
            lines.append(f"{self.url}: no video to check (an empty store, detections or "
                         "videos folder; --allow-empty accepts it)")
        return lines

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
    dtype = spec.extra.get("dtype", "float16")
    for name in spec.views:
        problems += [f"view {name}: {p}" for p in _view_problems(
            grp.get(name), name, len(stamps), spec.channels, dtype, spec.time_bins)]
        if dtype == "int8":
            problems += [f"view {name}: {p}" for p in _scale_problems(
                grp.get(scale_name(name)), len(stamps), spec.channels)]
    return problems


def _scale_problems(arr: Any, k: int, channels: int) -> list[str]:
    """What is wrong with the (K, C) float16 scales beside an int8 view."""
    if not isinstance(arr, zarr.Array):
        return ["int8 view without its scale array"]
    if arr.dtype != np.float16 or tuple(arr.shape) != (k, channels):
        return [f"scales are {arr.dtype} {tuple(arr.shape)}, expected float16 {(k, channels)}"]
    return []


def _view_problems(arr: Any, name: str, k: int, channels: int,
                   dtype: str = "float16", bins: int | None = None) -> list[str]:
    if not isinstance(arr, zarr.Array):
        return ["array missing"]
    problems = []
    if arr.dtype != np.dtype(dtype):
        problems.append(f"dtype {arr.dtype}, expected {dtype}")
    try:
        view = ViewSpec.from_dict(arr.attrs["acar"])
        w, h = (round(x / view.feature_stride) for x in view.input_size)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        return [*problems, f"no valid ViewSpec attributes ({err.__class__.__name__}: {err})"]
    if view.name != name:
        problems.append(f"its ViewSpec is named {view.name!r}")
    want = (k, channels, h, w) if bins is None else (k, channels, bins, h, w)
    if tuple(arr.shape) != want:
        problems.append(f"shape {tuple(arr.shape)}, expected {want} (keyframes, channels, "
                        f"{'' if bins is None else 'time bins, '}input size / feature_stride)")
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
