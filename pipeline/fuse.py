"""Stage fuse: two feature stores -> one whose maps are the two concatenated or added.

The papers' fusion of several networks' feature maps (Jiang et al., AVA 2018: RGB + optical
flow, several backbones; concatenated or added), done on cached features: a head then
trains and evaluates on the fused store as on any other.

    A: (K, Ca, [N,] H, W)   B: (K, Cb, [N,] H, W)
    concat -> (K, Ca + Cb, [N,] H, W)      add (Ca == Cb) -> (K, Ca, [N,] H, W)

The two stores must describe the same thing, cell for cell; every check below fails with
one line naming the store and the problem, before anything is written:

* the same complete videos, and per video the same keyframe timestamps (and frame size);
* the same views (names, scales, flips), each with the same input size, valid region and
  feature stride, hence the same grid (H, W); the same temporal bins N if any;
* for ``add``, the same channels C.

The fused store's spec (:class:`pipeline.artifacts.features.FeatureSpec`) is
``backbone = "fuse(<A>,<B>)"``, ``weights = "<mode>"``, ``channels`` the fused C, and
``extra.fuse = {"mode", "sources": [A's spec, B's spec]}`` (plus the ``extra`` keys both
sources share, e.g. ``clip_fps``, ``pad_multiple``), so a head trained on one fusion
rejects another (or one of rebuilt sources) as it rejects any other spec mismatch, and a
rerun rebuilds the videos whose spec or sources changed.

Atomicity is extract's: each video group is marked complete last, a rerun reuses the
complete, current groups of the same spec and sources and rebuilds the others (an
interrupted run resumes); groups of videos no longer in the sources are removed.  Values
are read as float (int8 sources dequantised) and stored as float16 (float32 when both
sources are float32).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from .artifacts import ArtifactError
from .artifacts.features import SHARD_KEYFRAMES, FeatureSpec, FeatureStore

MODES = ("concat", "add")


@dataclass(frozen=True)
class FuseConfig:
    mode: str = "concat"          # concat (channels Ca + Cb) | add (same C)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ArtifactError("fuse.mode", f"'{self.mode}' is not one of {', '.join(MODES)}")


def _json(d: dict) -> dict:
    """The dict as the store's JSON attrs give it back (tuples -> lists)."""
    return json.loads(json.dumps(d))


def fused_spec(a: FeatureSpec, b: FeatureSpec, mode: str, ca: int, cb: int) -> FeatureSpec:
    """The spec of ``mode``-fusing stores of specs ``a`` and ``b`` (C ``ca``, ``cb``)."""
    shared = {k: v for k, v in a.extra.items() if k != "dtype" and b.extra.get(k, None) == v
              and k in b.extra}
    if a.extra.get("dtype") == "float32" and b.extra.get("dtype") == "float32":
        shared["dtype"] = "float32"
    extra = {**shared, "fuse": {"mode": mode, "sources": [a.to_dict(), b.to_dict()]}}
    spec = FeatureSpec(f"fuse({a.backbone},{b.backbone})", mode, a.random_init or b.random_init,
                       a.clip_frames, a.clip_stride, a.short_side,
                       ca + cb if mode == "concat" else ca, a.views, extra)
    return FeatureSpec.from_dict(_json(spec.to_dict()))


def _grid(store: FeatureStore, video: str, view: str) -> tuple[int, ...]:
    return tuple(store.group(video)[view].shape)


def check_pair(a: FeatureStore, b: FeatureStore, mode: str) -> list[str]:
    """The videos to fuse; raises one :class:`ArtifactError` line on the first mismatch."""
    va, vb = a.videos(), b.videos()
    if not va:
        raise ArtifactError(a.url, "no complete video in the store")
    if va != vb:
        only_a, only_b = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
        which, store, other = (only_a, b, a) if only_a else (only_b, a, b)
        raise ArtifactError(store.url, f"lacks {len(which)} complete videos of {other.url} "
                            f"({', '.join(which[:3])}{', ...' if len(which) > 3 else ''}): "
                            "fuse needs the same videos")
    for video in va:
        sa, sb = a.spec(video), b.spec(video)
        if not np.array_equal(a.timestamps(video), b.timestamps(video)):
            raise ArtifactError(b.url, f"video '{video}': other keyframes than {a.url} "
                                f"({len(b.timestamps(video))} vs {len(a.timestamps(video))})")
        fa, fb = a.attrs(video).get("frame_size"), b.attrs(video).get("frame_size")
        if fa != fb:
            raise ArtifactError(b.url, f"video '{video}': frame size {fb} != {fa} of {a.url}")
        ta, tb = sa.extra.get("time_offset"), sb.extra.get("time_offset")
        if ta != tb:
            raise ArtifactError(b.url, f"video '{video}': time_offset {tb} != {ta} of {a.url}")
        if sa.views != sb.views:
            raise ArtifactError(b.url, f"video '{video}': views {list(sb.views)} != "
                                f"{list(sa.views)} of {a.url} (the same scales and flips)")
        for view in sa.views:
            xa, xb = a.view(video, view), b.view(video, view)
            for field, what in (("input_size", "input size"), ("valid", "valid region"),
                                ("feature_stride", "feature stride"),
                                ("scale", "scale"), ("flip", "flip")):
                if getattr(xa, field) != getattr(xb, field):
                    raise ArtifactError(b.url, f"video '{video}' view '{view}': {what} "
                                        f"{getattr(xb, field)} != {getattr(xa, field)} of "
                                        f"{a.url}")
            ga, gb = _grid(a, video, view), _grid(b, video, view)
            if len(ga) != len(gb) or ga[2:] != gb[2:]:
                raise ArtifactError(b.url, f"video '{video}' view '{view}': grid "
                                    f"{'x'.join(map(str, gb[2:]))} != "
                                    f"{'x'.join(map(str, ga[2:]))} of {a.url} "
                                    "((N,) H, W after the channels)")
            if mode == "add" and ga[1] != gb[1]:
                raise ArtifactError(b.url, f"video '{video}' view '{view}': {gb[1]} channels "
                                    f"!= {ga[1]} of {a.url}; --mode add needs the same C "
                                    "(use --mode concat)")
    return va


def run(cfg: FuseConfig, first: str | os.PathLike, second: str | os.PathLike,
        out: str | os.PathLike) -> dict[str, int]:
    """Fuse stores ``first`` and ``second`` into ``out``; returns counts (videos, reused,
    keyframes).  Every check runs before the first write."""
    a, b = FeatureStore(str(first)), FeatureStore(str(second))
    if os.path.abspath(str(out)) in {os.path.abspath(str(first)), os.path.abspath(str(second))}:
        raise ArtifactError(out, "the output must be another store than the inputs")
    videos = check_pair(a, b, cfg.mode)
    store = FeatureStore(str(out), mode="a")
    for video in store.videos(complete_only=False):
        if video not in videos:
            store.remove_video(video)
    reused = keyframes = 0
    for video in videos:
        sa, sb = a.spec(video), b.spec(video)
        view0 = sa.views[0]
        ca, cb = _grid(a, video, view0)[1], _grid(b, video, view0)[1]
        spec = fused_spec(sa, sb, cfg.mode, ca, cb)
        sources = [a.attrs(video).get("source"), b.attrs(video).get("source")]
        stamps = a.timestamps(video)
        keyframes += len(stamps)
        if (store.is_current(video) and store.spec(video) == spec
                and np.array_equal(store.timestamps(video), stamps)
                and store.attrs(video).get("fuse_inputs") == _json({"s": sources})["s"]):
            reused += 1
            continue
        attrs = a.attrs(video)
        store.begin_video(video, stamps, {**spec.to_dict(), "frame_size": attrs.get("frame_size"),
                                          "fps": attrs.get("fps"), "fuse_inputs": sources})
        dtype = spec.extra.get("dtype", "float16")
        for view in sa.views:
            shape = list(_grid(a, video, view))
            shape[1] = spec.channels
            arr = store.create_view(video, a.view(video, view), tuple(shape), dtype)
            for start in range(0, shape[0], SHARD_KEYFRAMES):
                rows = slice(start, min(start + SHARD_KEYFRAMES, shape[0]))
                xa = a.read(video, view, rows).astype(np.float32)     # (B, Ca, [N,] H, W)
                xb = b.read(video, view, rows).astype(np.float32)     # (B, Cb, [N,] H, W)
                fused = np.concatenate([xa, xb], 1) if cfg.mode == "concat" else xa + xb
                if not np.isfinite(fused.astype(dtype)).all():
                    raise ArtifactError(out, f"video '{video}' view '{view}': the sum "
                                        f"overflows {dtype}")
                store.write_rows(video, arr, start, fused.astype(dtype))
        store.finish_video(video)
    print(f"fuse: {len(videos):,} videos ({reused:,} reused), {keyframes:,} keyframes, "
          f"{cfg.mode} of {a.url} + {b.url} ({out})", file=sys.stderr)
    return {"videos": len(videos), "reused": reused, "keyframes": keyframes}
