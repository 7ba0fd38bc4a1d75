"""Stage ``bank``: feature banks of long-term context, one Zarr group per video.

``lfb`` (Wu et al., CVPR 2019): the actor vector A_i (RoIAlign 7x7 + max-pool on the
cached context map) of every detected person with score >= ``det_threshold`` at every
keyframe.  Layout (a store of kind ``bank``; see :mod:`pipeline.artifacts.features`)::

    bank.zarr/<video_id>/   attrs: {"acar": {"kind": "lfb", ..., "complete": bool}}
        timestamps          int32 (K,)      keyframes of the video
        actor_timestamps    int32 (M,)      keyframe second of each banked actor
        boxes               float32 (M, 4)  normalised boxes
        vectors             float16 (M, C)  actor vectors
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.detections import read_detections
from .artifacts.features import FeatureStore
from .keyframes import FeatureCache, Keyframe, batch
from .models.actor import actor_vectors

BANK_KIND = "bank"


@dataclass
class BankConfig:
    kind: str = "lfb"                # lfb | acfb
    det_threshold: float = 0.9
    view: str | None = None          # feature view (default: the store's first)
    batch_size: int = 32             # keyframes per step


def _write(store: FeatureStore, video: str, name: str, data: np.ndarray) -> None:
    grp = store.group(video)
    arr = grp.create_array(name, shape=data.shape, dtype=data.dtype,
                           chunks=(max(len(data), 1), *data.shape[1:]))
    if data.size:
        arr[...] = data


@torch.inference_mode()
def run(cfg: BankConfig, features: str, detections: str, out: str, model: str | None = None,
        shard: tuple[int, int] = (0, 1)) -> list[str]:
    if cfg.kind != "lfb":
        raise ArtifactError(out, f"bank kind '{cfg.kind}' is not available (choose lfb)")
    src = FeatureStore(features)
    dets, _ = read_detections(detections, min_score=cfg.det_threshold)
    groups = {k: g for k, g in dets.groupby(["video_id", "timestamp"])}
    bank = FeatureStore(out, mode="a", kind=BANK_KIND)
    i, n = shard
    videos = [v for k, v in enumerate(src.videos()) if k % n == i]
    for video in tqdm([v for v in videos if not bank.is_complete(v)], desc="bank", unit="video"):
        spec = src.spec(video)
        view = cfg.view or spec.views[0]
        cache = FeatureCache(src, view, in_memory=True)
        kfs = [Keyframe(video, int(t), k, g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
               for k, t in enumerate(src.timestamps(video))
               if (g := groups.get((video, int(t)))) is not None]
        vecs = [actor_vectors(*batch(kfs[s:s + cfg.batch_size], cache)).numpy()
                for s in range(0, len(kfs), cfg.batch_size)]
        bank.begin_video(video, src.timestamps(video),
                         {"kind": "lfb", "features": spec.to_dict(), "view": view,
                          "det_threshold": cfg.det_threshold})
        _write(bank, video, "actor_timestamps",
               np.concatenate([[k.timestamp] * len(k.boxes) for k in kfs] or [[]]
                              ).astype(np.int32))
        _write(bank, video, "boxes",
               np.concatenate([k.boxes for k in kfs] or [np.zeros((0, 4))]).astype(np.float32))
        _write(bank, video, "vectors",
               np.concatenate(vecs or [np.zeros((0, spec.channels))]).astype(np.float16))
        bank.finish_video(video)
    return []
