"""``acar extract --check``: is a feature store complete and consistent?

Reads metadata only and never writes; imports no torch, so it starts in a moment on a
login node.  The layout checks are :meth:`pipeline.artifacts.features.FeatureStore.check`;
this module decides which videos should be there, as :mod:`pipeline.extract` would.
"""

from __future__ import annotations

import os

import numpy as np

from .artifacts.detections import read_detections
from .artifacts.features import FeatureStore, StoreCheck
from .video import fingerprint, list_videos, shard_videos


def check_store(out: str, detections: str | os.PathLike | None = None,
                videos_dir: str | os.PathLike | None = None,
                shard: tuple[int, int] = (0, 1)) -> StoreCheck:
    """Verify the feature store ``out`` (path or fsspec URL) without writing to it.

    The videos that should be there are those of the detections (with exactly their
    keyframes), else the files of ``videos_dir``, else the store's own groups; ``shard``
    keeps a 1/N of them.  Each must be present, complete and consistent with the layout
    and the store's spec; with ``videos_dir``, its video file must also be the one it
    was extracted from (else a rerun of extract would redo it).
    """
    store = FeatureStore(out)
    paths = list_videos(videos_dir) if videos_dir is not None else {}
    expected: dict[str, np.ndarray | None] | None = None
    if detections is not None:
        dets, _ = read_detections(detections)
        expected = {v: np.unique(g["timestamp"]).astype(np.int32)
                    for v, g in dets.groupby("video_id")}
    elif videos_dir is not None:
        expected = dict.fromkeys(paths)
    if shard != (0, 1):
        names = store.videos(complete_only=False) if expected is None else list(expected)
        expected = {v: (expected or {}).get(v) for v in shard_videos(names, shard)}
    report = store.check(expected)
    for video in list(report.complete):
        recorded = store.attrs(video).get("source")
        if video in paths and recorded is not None and recorded != fingerprint(paths[video]):
            report.flag(video, f"{paths[video]} is not the file it was extracted from "
                        "(a rerun of extract would redo it)")
    return report
