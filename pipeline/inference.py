"""Run-time of trained heads: load a checkpoint, choose test keyframes, predict, validate.

Shared by the stages that run a trained head (``eval``, ``bank --kind acfb``, ``train``'s
validation, ``demo``), so that no stage imports another.  Prediction averages the logits
of a box over the views (test-time augmentation: scales, flips; flipped views map boxes
through their :class:`ViewSpec`) before the activation.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations, read_excluded
from .artifacts.features import EXTRA_ABSENT, FeatureSpec, FeatureStore
from .artifacts.labelmap import LabelMap
from .artifacts.predictions import COLUMNS as PRED_COLUMNS
from .ava_eval import frame_map
from .bank_reader import BankReader
from .inference_config import PredictConfig
from .keyframes import BOX_COLUMNS, FeatureCache, Keyframe, batch, keyframe_rows
from .losses import activate
from .models import build_head, head_config, reads_time
from .progress import progress


def head_spec(head: str, hparams: dict, where: object | None = None) -> dict:
    """Every hyper-parameter of ``head``: ``hparams`` over the defaults of the head's config
    dataclass (:func:`pipeline.models.head_config`), as a checkpoint records them.  An
    unknown head or key is a one-line :class:`ArtifactError` naming both, and ``where``
    they came from (default: ``heads.<head>.hparams`` of the params file)."""
    try:
        config = head_config(head, dict(hparams))
    except ValueError as err:
        raise ArtifactError(where or f"heads.{head}.hparams", str(err)) from None
    return asdict(config)


# The fields of a FeatureSpec that make two stores' features interchangeable for a head
# (``extra``'s keys are compared one by one: clip_fps, dilate_last, pad_multiple, ...).
SPEC_FIELDS = ("backbone", "weights", "random_init", "short_side", "clip_frames",
               "clip_stride", "channels", "views")
# How a store keeps its values (extract.dtype: float16, int8, float32), not which features
# they are: a head trained on one scores the others (int8 within its quantisation step).
STORAGE_KEYS = ("dtype",)


def spec_differences(want: dict | FeatureSpec, got: dict | FeatureSpec,
                     extra: bool = True) -> list[str]:
    """``field want != got`` for each field where the features a checkpoint was trained on
    (``want``) differ from a store's (``got``); [] when they match.  ``extra``: compare the
    keys of ``FeatureSpec.extra`` too (demo's own extraction sets some of them itself)."""
    a = want if isinstance(want, FeatureSpec) else FeatureSpec.from_dict(want)
    b = got if isinstance(got, FeatureSpec) else FeatureSpec.from_dict(got)
    out = [f"{k} {_shown(getattr(a, k))} != {_shown(getattr(b, k))}"
           for k in SPEC_FIELDS if getattr(a, k) != getattr(b, k)]
    for k in sorted(set(a.extra) | set(b.extra)) if extra else ():
        va, vb = (x.extra.get(k, EXTRA_ABSENT.get(k)) for x in (a, b))
        if k not in STORAGE_KEYS and va != vb:
            out.append(f"{k} {_shown(va)} != {_shown(vb)}")
    return out


def _shown(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def check_feature_spec(want: dict | FeatureSpec, store: FeatureStore, videos: list[str],
                       model: object = "checkpoint", extra: bool = True) -> None:
    """The features of ``videos`` in ``store`` are those ``model`` was trained on (the
    checkpoint's ``feature_spec``), else one :class:`ArtifactError` line naming the fields
    that differ (trained != store's).  The one check of eval (through :func:`predict`),
    ``bank --kind acfb`` and demo."""
    seen: set[str] = set()
    for video in videos:
        got = store.spec(video)
        key = repr(got)
        if key in seen:
            continue
        seen.add(key)
        diff = spec_differences(want, got, extra)
        if diff:
            raise ArtifactError(model, f"trained on other features than those of '{video}' in "
                                       f"{store.url} (trained != store): {'; '.join(diff)}")


def load_head(ckpt: dict, path: str | os.PathLike | None = None) -> torch.nn.Module:
    """The trained head of a checkpoint (:func:`pipeline.artifacts.checkpoint.load_checkpoint`),
    in eval mode.  ``hparams`` may be the full spec (what ``train`` records) or, in a
    checkpoint written before specs were typed, only the keys that were set: the head's
    defaults fill the others, as its constructor did then.  The head keeps the checkpoint's
    ``feature_spec`` (``head.feature_spec``) and ``head.source``: :func:`predict` checks the
    store's features against it (:func:`check_feature_spec`)."""
    where = path or "checkpoint"
    spec = head_spec(ckpt["head"], ckpt["hparams"], where)
    head = build_head(ckpt["head"], ckpt["in_channels"], ckpt["num_classes"], **spec)
    try:
        head.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:       # weights of another shape or name
        lines = str(err).strip().splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip()[:200]
        raise ArtifactError(where, f"its weights do not fit a '{ckpt['head']}' head with "
                            f"these hparams ({detail})") from None
    head.feature_spec, head.source = ckpt.get("feature_spec"), where
    return head.eval()


def test_keyframes(store: FeatureStore, dets: pd.DataFrame, videos: list[str]) -> list[Keyframe]:
    """Every keyframe of ``videos`` in the store that has at least one detection."""
    rows = keyframe_rows(dets)                      # (video, ts) -> its rows, in order
    boxes = dets[BOX_COLUMNS].to_numpy(np.float32)
    out = []
    for video in videos:
        for k, ts in enumerate(store.timestamps(video)):
            r = rows.get((video, int(ts)))
            if r is not None:
                out.append(Keyframe(video, int(ts), k, boxes[r]))
    return out


@torch.inference_mode()
def predict(head: torch.nn.Module, labelmap: LabelMap, store: FeatureStore, dets: pd.DataFrame,
            videos: list[str], cfg: PredictConfig, default_views: list[str],
            bank: BankReader | None = None) -> pd.DataFrame:
    """AVA result rows (one per box and class) for the keyframes of ``videos``; ``bank``
    gives bank heads their slots (deterministic: no sampling at evaluation).  A head from
    :func:`load_head` must have been trained on the features of ``videos``
    (:func:`check_feature_spec`)."""
    if getattr(head, "feature_spec", None) is not None:
        check_feature_spec(head.feature_spec, store, videos, getattr(head, "source", "checkpoint"))
    dets = dets[dets["score"] >= cfg.det_score_thr]
    kfs = test_keyframes(store, dets, videos)
    caches = [FeatureCache(store, v, cfg.in_memory, time=reads_time(head))
              for v in cfg.views or default_views]
    return predict_keyframes(head, labelmap, kfs, caches, cfg.batch_size, bank)


@torch.inference_mode()
def predict_keyframes(head: torch.nn.Module, labelmap: LabelMap, kfs: list[Keyframe],
                      caches: list[FeatureCache], batch_size: int,
                      bank: BankReader | None = None) -> pd.DataFrame:
    """Logits averaged over the views of ``caches``, then activated, as AVA result rows
    (with a ``logit`` column: the averaged logit each ``score`` activates).
    A non-finite logit is an :class:`ArtifactError` naming the store and keyframes (no
    row with a NaN score is ever returned)."""
    was_training = head.training
    head.eval()
    ids = np.asarray(labelmap.ids)
    parts = []
    for s in progress(range(0, len(kfs), batch_size), desc="predict", unit="batch", leave=False):
        chunk = kfs[s:s + batch_size]
        slots = [bank.gather(chunk, flip=c.view(chunk[0].video).flip) if bank else None
                 for c in caches]
        logits = torch.stack([_forward(head, chunk, c, sl)
                              for c, sl in zip(caches, slots, strict=True)]).mean(0)  # (N, K)
        if not torch.isfinite(logits).all():
            bad = ~torch.isfinite(logits).all(1)                                    # (N,)
            owner = np.repeat(np.arange(len(chunk)), [len(k.boxes) for k in chunk])
            names = [f"{chunk[i].video}@{chunk[i].timestamp}"
                     for i in sorted(set(owner[bad.numpy()].tolist()))]
            raise ArtifactError(caches[0].store.url, "non-finite scores (NaN or inf features?) "
                                f"at keyframes {', '.join(names[:6])}"
                                + (f" (+{len(names) - 6} more)" if len(names) > 6 else ""))
        probs = activate(logits, labelmap.pose_indices).numpy()
        boxes = np.concatenate([k.boxes for k in chunk])
        vid = np.concatenate([[k.video] * len(k.boxes) for k in chunk])
        ts = np.concatenate([[k.timestamp] * len(k.boxes) for k in chunk])
        n, kc = probs.shape
        parts.append(pd.DataFrame({
            "video_id": np.repeat(vid, kc), "timestamp": np.repeat(ts, kc),
            "x1": np.repeat(boxes[:, 0], kc), "y1": np.repeat(boxes[:, 1], kc),
            "x2": np.repeat(boxes[:, 2], kc), "y2": np.repeat(boxes[:, 3], kc),
            "action_id": np.tile(ids, n), "score": probs.reshape(-1),
            "logit": logits.numpy().reshape(-1)}))      # what `score` activates (ensembles)
    head.train(was_training)
    if not parts:
        return pd.DataFrame({c: [] for c in [*PRED_COLUMNS, "logit"]})
    return pd.concat(parts, ignore_index=True)


def _forward(head: torch.nn.Module, kfs: list[Keyframe], cache: FeatureCache,
             bank: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """(N, K) logits of the boxes of ``kfs`` on the maps of ``cache``'s view, each head
    seeing only the image's region of its maps (``valid``)."""
    context, rois, valid = batch(kfs, cache)
    return head(context, rois, bank=bank, valid=valid)


class Validator:
    """Scores a head on a val split during training; inputs are prepared once."""

    def __init__(self, store: FeatureStore, dets: pd.DataFrame, annotations: str | os.PathLike,
                 labelmap: LabelMap, view: str, cfg: PredictConfig | None = None,
                 bank: BankReader | None = None, excluded: str | os.PathLike | None = None,
                 time: bool = False):
        """``time``: the head reads time bins (``reads_time``; see ``FeatureCache``)."""
        self.cfg, self.bank = cfg or PredictConfig(), bank
        self.gt, self.labelmap = read_annotations(annotations), labelmap
        # scored as `eval --excluded` scores: the frames of this file are left out
        self.excluded = read_excluded(excluded) if excluded is not None else None
        videos = sorted(set(self.gt["video_id"]) & set(store.videos()))
        dets = dets[dets["score"] >= self.cfg.det_score_thr]
        self.keyframes = test_keyframes(store, dets, videos)
        self.caches = [FeatureCache(store, view, self.cfg.in_memory, time=time)]

    def __call__(self, head: torch.nn.Module) -> dict:
        pred = predict_keyframes(head, self.labelmap, self.keyframes, self.caches,
                                 self.cfg.batch_size, self.bank)
        return frame_map(self.gt, pred, self.labelmap, self.excluded).metrics
