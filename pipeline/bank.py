"""Stage ``bank``: long-term feature banks, one Zarr group per video (resumable, shardable).

Two kinds, each in its own store (layout: :mod:`pipeline.artifacts.banks`):

``lfb`` (Wu et al., CVPR 2019)
    The actor vector A_i (RoIAlign 7x7 + max-pool on the cached context map) of every
    detected person with score >= ``det_score_thr`` at every keyframe.

``acfb`` (Pan et al., CVPR 2021, Sec. 3.3)
    The first-order actor-context map F_i of every actor at every keyframe (1 s stride),
    made by the first-order part of a *trained* ``acar`` checkpoint, then max-pooled by
    ``pool`` (none / 2x2 / 4x4: size against detail).  With ``scene`` (not in the paper),
    also each keyframe's context map as the feature store holds it (for acfb's ``scene``
    option: the head encodes it with its own, trained layers).  Boxes: a keyframe with ground truth
    in ``annotations`` (the train videos) uses its GT boxes; any other keyframe (val/test
    videos) uses the detections with score >= ``det_score_thr``.  Built once, frozen.

``memory`` (Feng et al. 2021, T-only with memory)
    The pooled person feature of every actor at every keyframe: the representation that
    a *trained* ``t_only`` (stage one, no bank) feeds its classifier (its encoder's output
    averaged over the time bins, (d,)), read from a store with time bins.  Boxes as acfb.
    Stage two fine-tunes a ``t_only`` with ``window`` set from the stage-one checkpoint
    (``train --init``), the bank's vectors concatenated to each time bin's tokens.

Every keyframe of every complete video in the feature store is banked, from the image's
cells of its context maps only (the ``valid`` region of :mod:`pipeline.keyframes`; a
video whose image does not fill its maps records them as ``image_cells``).  A complete
video group is reused only when its recorded spec (features, view, boxes, threshold,
image cells; for acfb the checkpoint's weight hash and the pool) equals the current one;
anything else is rebuilt, one video at a time, so an interrupted run resumes and nothing
finished is lost.  A group of a video that is not in the run's input (the feature store's
complete videos) is removed, so the store equals a fresh build of the same inputs; a
sharded run removes only those of its shard (:func:`pipeline.shards.stale_items`).  For acfb the
checkpoint's features must be the store's (:func:`pipeline.inference.check_feature_spec`),
checked for every video before anything is written.
The same inputs give the same bytes (batches never cross videos).  A run that ends with
the whole bank complete writes its digest beside it (``data/banks/lfb.zarr`` ->
``data/banks/lfb.digest``, :mod:`pipeline.artifacts.digest`): what the DAG's stages depend on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.banks import BankStore, digest
from .artifacts.checkpoint import load_checkpoint
from .artifacts.detections import read_detections
from .artifacts.digest import remove_digest, write_digest
from .artifacts.features import FeatureSpec, FeatureStore
from .inference import check_feature_spec, load_head
from .keyframes import FeatureCache, Keyframe, batch, valid_cells
from .models import BANK_POOLS
from .models.actor import actor_vectors
from .progress import progress
from .shards import shard_items, stale_items

BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


@dataclass
class BankConfig:
    kind: str = "lfb"                # lfb | acfb | memory
    det_score_thr: float = 0.9       # detections banked (and, for acfb, where no GT)
    pool: str = "none"               # acfb: max-pool of the stored maps, none | 2x2 | 4x4
    view: str | None = None          # feature view (default: the store's first)
    batch_size: int = 16             # keyframes per forward pass (never across videos)
    scene: bool = False              # acfb: also bank each keyframe's context map


def weights_digest(ckpt: dict) -> str:
    """sha256 (16 hex) of a checkpoint's head, hparams and weights: what the bank depends on
    (not its training log or optimizer state)."""
    h = hashlib.sha256(json.dumps([ckpt["head"], ckpt["hparams"]], sort_keys=True).encode())
    for name, t in sorted(ckpt["state_dict"].items()):
        h.update(name.encode())
        h.update(digest(t.detach().cpu().contiguous().numpy()).encode())
    return h.hexdigest()[:16]


def video_boxes(video: str, timestamps: np.ndarray, dets: dict, gt: dict
                ) -> tuple[list[Keyframe], np.ndarray, np.ndarray]:
    """The banked actors of one video: keyframes (with boxes) + per-box scores and GT flags.

    A keyframe with GT boxes uses them (unique boxes, sorted); otherwise its detections.
    """
    kfs, scores, from_gt = [], [], []
    for k, t in enumerate(timestamps):
        if (g := gt.get((video, int(t)))) is not None:
            boxes = np.unique(g[BOX_COLUMNS].to_numpy(np.float32), axis=0)
            s, flag = np.ones(len(boxes), np.float32), np.ones(len(boxes), bool)
        elif (g := dets.get((video, int(t)))) is not None:
            boxes = g[BOX_COLUMNS].to_numpy(np.float32)
            s, flag = g["score"].to_numpy(np.float32), np.zeros(len(boxes), bool)
        else:
            continue
        kfs.append(Keyframe(video, int(t), k, boxes))
        scores.append(s)
        from_gt.append(flag)
    return kfs, np.concatenate(scores or [[]]), np.concatenate(from_gt or [[]]).astype(bool)


class LFBMaker:
    """lfb rows: (context, rois) -> actor vectors (N, C)."""

    spec: dict = {}

    def item(self, fspec: FeatureSpec, height: int, width: int) -> tuple[int, ...]:
        return (fspec.channels,)

    def check(self, store: FeatureStore, videos: list[str]) -> None:
        pass

    def __call__(self, context: torch.Tensor, rois: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
        """Actor vectors on the image's cells only: a batch holds the keyframes of one
        video (one view, so one ``valid`` row), whose maps are cropped to it."""
        if valid is not None:
            rows, cols = (int(x) for x in valid[0])
            context = context[:, :, :rows, :cols]                         # (B, C, rows, cols)
        return actor_vectors(context, rois)                               # (N, C)


class ACFBMaker:
    """acfb rows: (context, rois) -> pooled first-order maps (N, d, h, w) of a trained acar."""

    def __init__(self, model: str | os.PathLike | None, pool: str):
        if model is None:
            raise ArtifactError("--model", "an acfb bank needs a trained acar checkpoint")
        self.model = model
        ckpt = load_checkpoint(model)
        if ckpt["head"] != "acar":
            raise ArtifactError(model, f"a '{ckpt['head']}' checkpoint: an acfb bank holds the "
                                       "first-order maps of a trained acar head")
        self.head = load_head(ckpt, model)
        self.features = FeatureSpec.from_dict(ckpt["feature_spec"])
        self.pool = pool
        self.spec = {"model": weights_digest(ckpt), "pool": pool}

    def item(self, fspec: FeatureSpec, height: int, width: int) -> tuple[int, ...]:
        """(d, h, w) of one banked map."""
        return self.head.bank_item_shape(height, width, self.pool)

    def check(self, store: FeatureStore, videos: list[str]) -> None:
        """The checkpoint was trained on the features of ``videos`` (one line naming the
        fields that differ)."""
        check_feature_spec(self.features, store, videos, self.model)

    def __call__(self, context: torch.Tensor, rois: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.bank_maps(context, rois, self.pool, valid=valid)  # (N, d, h, w)


class MemoryMaker:
    """memory rows: (context (B, C, T, H, W), rois) -> pooled person features (N, d) of a
    trained t_only (one without a bank: stage one)."""

    time = True                      # reads the store's time bins

    def __init__(self, model: str | os.PathLike | None):
        if model is None:
            raise ArtifactError("--model", "a memory bank needs a trained t_only checkpoint")
        self.model = model
        ckpt = load_checkpoint(model)
        if ckpt["head"] != "t_only" or ckpt["hparams"].get("window") is not None:
            raise ArtifactError(model, f"a '{ckpt['head']}' checkpoint"
                                f"{' with a memory window' if ckpt['head'] == 't_only' else ''}"
                                ": a memory bank holds the person features of a stage-one "
                                "t_only (window: null)")
        self.head = load_head(ckpt, model)
        self.features = FeatureSpec.from_dict(ckpt["feature_spec"])
        self.spec = {"model": weights_digest(ckpt)}

    def item(self, fspec: FeatureSpec, height: int, width: int) -> tuple[int, ...]:
        return (self.head.config.width,)

    def check(self, store: FeatureStore, videos: list[str]) -> None:
        check_feature_spec(self.features, store, videos, self.model)

    def __call__(self, context: torch.Tensor, rois: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.features(context, rois, None, valid)[0]          # (N, d)


def bank_index(kfs: list[Keyframe], scores: np.ndarray, from_gt: np.ndarray
               ) -> dict[str, np.ndarray]:
    """The index arrays of a video's bank (one row per actor, keyframe by keyframe)."""
    return {"actor_timestamps": np.concatenate([[k.timestamp] * len(k.boxes) for k in kfs]
                                               or [[]]).astype(np.int32),
            "actor_index": np.concatenate([np.arange(len(k.boxes)) for k in kfs]
                                          or [[]]).astype(np.int32),
            "boxes": np.concatenate([k.boxes for k in kfs] or [np.zeros((0, 4))]
                                    ).astype(np.float32),
            "scores": scores.astype(np.float32), "from_gt": from_gt.astype(bool)}


def read_gt(annotations: list[str | os.PathLike] | tuple) -> dict:
    """(video, timestamp) -> GT rows, over all ``annotations`` files."""
    if not annotations:
        return {}
    gt = pd.concat([read_annotations(p) for p in annotations], ignore_index=True)
    return {k: g for k, g in gt.groupby(["video_id", "timestamp"])}


@torch.inference_mode()
def run(cfg: BankConfig, features: str, detections: str | os.PathLike, out: str,
        model: str | os.PathLike | None = None,
        annotations: list[str | os.PathLike] | tuple = (),
        shard: tuple[int, int] = (0, 1)) -> list[str]:
    """Build (or complete) the ``cfg.kind`` bank ``out`` for this shard; returns failures."""
    if cfg.kind not in ("lfb", "acfb", "memory"):
        raise ArtifactError(out, f"bank kind '{cfg.kind}' is not available (choose lfb, acfb, "
                                 "memory)")
    if cfg.pool not in BANK_POOLS:
        raise ArtifactError(out, f"unknown pool '{cfg.pool}' (choose {', '.join(BANK_POOLS)})")
    if cfg.kind == "lfb" and (annotations or model is not None):
        raise ArtifactError(out, "an lfb bank is made of features and detections only "
                                 "(drop --model and --annotations)")
    if cfg.scene and cfg.kind != "acfb":
        raise ArtifactError(out, "scene maps are banked for acfb only (drop --scene)")
    compute = (LFBMaker() if cfg.kind == "lfb" else MemoryMaker(model) if cfg.kind == "memory"
               else ACFBMaker(model, cfg.pool))
    src = FeatureStore(features)
    dets, _ = read_detections(detections, min_score=cfg.det_score_thr)
    dets = {k: g for k, g in dets.groupby(["video_id", "timestamp"])}
    gt = read_gt(annotations) if cfg.kind in ("acfb", "memory") else {}
    inputs = src.videos()
    if not inputs:                          # also keeps a wrong --features from emptying out
        raise ArtifactError(features, "feature store has no complete videos")
    videos = shard_items(inputs, shard)
    for video in videos:                    # whole-run errors, before anything is written
        fspec = src.spec(video)
        if (cfg.view or fspec.views[0]) not in fspec.views:
            raise ArtifactError(features, f"video '{video}' has no view '{cfg.view}' "
                                          f"(it has {', '.join(fspec.views)})")
    compute.check(src, videos)
    bank = BankStore(out, mode="a")
    remove_digest(out)                      # written again below once the bank is complete
    for video in stale_items(bank.videos(complete_only=False), inputs, shard):
        bank.store.remove_video(video)      # not in this run's input: a fresh build lacks it
    failures: list[str] = []
    reused = 0
    for video in progress(videos, desc=f"bank {cfg.kind}", unit="video"):
        fspec = src.spec(video)
        view = cfg.view or fspec.views[0]
        timestamps = src.timestamps(video)
        kfs, scores, from_gt = video_boxes(video, timestamps, dets, gt)
        index = bank_index(kfs, scores, from_gt)
        height, width = src.group(video)[view].shape[-2:]
        item = compute.item(fspec, height, width)
        cells = valid_cells(src.view(video, view), height, width)
        spec = {"features": fspec.to_dict(), "view": view, "det_threshold": cfg.det_score_thr,
                "boxes": digest(*(index[k] for k in sorted(index))), "dim": item[0],
                **compute.spec}
        if cells != (height, width):        # banked from the image's cells only (a group
            spec["image_cells"] = list(cells)   # made before that is rebuilt, not reused)
        if cfg.scene:
            spec["scene"] = True
        if bank.is_current(video) and bank.attrs(video).get("kind") == cfg.kind \
                and bank.spec(video) == spec:
            reused += 1
            continue
        cache = FeatureCache(src, view, in_memory=True, time=getattr(compute, "time", False))
        data = bank.begin_video(video, cfg.kind, timestamps, spec, index,
                                (len(index["boxes"]), *item))
        row = 0
        for s in range(0, len(kfs), cfg.batch_size):
            rows = compute(*batch(kfs[s:s + cfg.batch_size], cache)).numpy()
            data[row:row + len(rows)] = rows.astype(np.float16)
            row += len(rows)
        if cfg.scene:                       # (K, C, H, W): the store's maps, as they are
            bank.write_scene(video, np.stack(cache.contexts(
                [(video, k) for k in range(len(timestamps))])))
        bank.finish_video(video)
    size = bank.size([v for v in videos if bank.is_complete(v)])
    tqdm.write(f"bank {cfg.kind}: {size['videos']} videos ({reused} reused), "
               f"{size['keyframes']} keyframes, {size['actors']} actors, "
               f"{size['bytes_per_keyframe']:.0f} bytes/keyframe "
               f"({size['stored_bytes_per_keyframe']:.0f} stored) -> {out}")
    # a full build gets its digest (a shard: once the others are done too)
    if set(bank.videos(complete_only=False)) == set(inputs) and all(
            bank.is_current(v) and bank.attrs(v).get("kind") == cfg.kind for v in inputs):
        write_digest(out)
    return failures
