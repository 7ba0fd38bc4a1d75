"""``acar demo``: the actions of the people in one video file, rendered to watch.

The stages themselves run on the one video, without DVC: :mod:`pipeline.detect` (YOLO,
or the boxes of an annotation CSV), :mod:`pipeline.extract` with the settings recorded
in the checkpoint's feature spec (backbone, weights, clip, views: the features match
training), :mod:`pipeline.bank` for bank heads, :func:`pipeline.inference.predict`, and
:func:`pipeline.viz.render_video`.  Outputs in ``OUT/``:

* ``<name>.predictions.csv``: AVA result rows (:mod:`pipeline.artifacts.predictions`), one
  file per video, so one ``OUT`` holds the runs of many videos;
* ``<name>_actions.mp4``: the video with each person's box (one colour per person, kept
  over keyframes) and top actions (one colour per class);
* ``heatmaps/<name>_<timestamp>_<person>_<class>.png`` (``heatmap``, relation heads):
  the class activation map of each person's top action over the keyframe (ACAR Fig. 6,
  ACRN Fig. 5): ``CAM = sum_c w_c * F_c``, with F the relation maps before their average
  pooling and w the classifier weights of that class that read the pooled maps.  The
  title sits in a band above the frame (it hides no label) and a colour bar on the right
  reads the map (normalised per image: 0 its lowest cell, 1 its highest).

The stages' artifacts stay in ``OUT/work/<name>/`` (detections, features, bank), so a
second run on the same video with the same backbone settings reuses the features.

The demo is not a stage of the DAG but a composite tool: it chains the stages' ``run``
functions on one video, so it alone imports stage modules (``detect``, ``extract``,
``bank``).  It reads a head through its declared types only: ``head.bank_request`` (a
:class:`~pipeline.models.BankRequest` or None) says which bank to build, and an
``isinstance(head, RelationHead)`` check (:class:`~pipeline.models.RelationHead`) says
whether it has relation maps for ``--heatmap``.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from . import bank as bank_stage
from . import detect, extract, viz
from .artifacts import ArtifactError
from .artifacts.atomic import atomic_path
from .artifacts.checkpoint import load_checkpoint, save_checkpoint
from .artifacts.detections import read_detections
from .artifacts.features import FeatureSpec, FeatureStore, ViewSpec
from .artifacts.labelmap import LabelMap
from .artifacts.predictions import COLUMNS as PRED_COLUMNS
from .artifacts.predictions import write_predictions
from .backbones import NON_LEARNED
from .bank_reader import open_bank
from .inference import PredictConfig, check_feature_spec, load_head, predict, test_keyframes
from .keyframes import FeatureCache, batch
from .models import RelationHead
from .progress import progress
from .video import Video, open_video


@dataclass
class DemoConfig:
    detector: str = "yolo"          # yolo | gt (the boxes of an annotation CSV)
    weights: str = detect.YOLO_WEIGHTS  # yolo: a weights name (downloads when online) or a path
    classes: list[int] = field(default_factory=lambda: [0])   # yolo: class ids of persons
    det_score_thr: float = 0.35     # persons scoring at least this get actions (YOLO often
                                    # scores small, distant people below 0.5)
    action_score_thr: float = 0.3   # actions drawn with score >= this ...
    top_k: int = 3                  # ... at most this many per person
    keyframe_interval: int = 1      # seconds between keyframes (yolo)
    time_offset: int = 0            # timestamp = video time + offset (AVA cuts: 900)
    heatmap: bool = False           # relation heads: class activation maps as PNGs
    device: str = "auto"            # detector and backbone: auto | cpu | cuda[:i]


# how a heatmap is drawn: its person's top action only, larger text
HEATMAP_VIZ = viz.VizConfig(action_score_thr=0.0, top_k=1, text_scale=1 / 24)


@dataclass
class DemoResult:
    predictions: Path
    video: Path
    heatmaps: list[Path]
    persons: int                    # person boxes that got actions
    keyframes: int


def say(msg: str) -> None:
    tqdm.write(f"demo: {msg}", file=sys.stderr)


# ---- the checkpoint's features ------------------------------------------------------------

def extract_config(feature_spec: dict, backbone_weights: str | None = None,
                   device: str = "auto") -> extract.ExtractConfig:
    """The extract settings that reproduce the features a checkpoint was trained on.

    Stores written before ``extra`` was recorded made native-frame clips (clip_fps None).
    A backbone trained from a weights file needs that file (``backbone_weights``).
    """
    spec = FeatureSpec.from_dict(feature_spec)
    extra = spec.extra
    scales = list(dict.fromkeys(int(v.removesuffix("_flip")[1:]) for v in spec.views))
    seed = re.fullmatch(r"random-init\(seed=(\d+)\)", spec.weights)
    weights: str | None = spec.weights
    if spec.random_init or spec.weights == NON_LEARNED:
        weights = None
    elif spec.weights.startswith("file:"):
        if backbone_weights is None:
            raise ArtifactError(spec.weights, "the checkpoint's backbone weights are a file; "
                                "pass --backbone-weights PATH to it")
        weights = backbone_weights
    return extract.ExtractConfig(
        backbone=spec.backbone, weights=weights, random_init=spec.random_init,
        seed=int(seed.group(1)) if seed else 0, dilate_last=extra.get("dilate_last", False),
        clip_frames=spec.clip_frames, clip_stride=spec.clip_stride,
        clip_fps=extra.get("clip_fps"), time_offset=None, short_side=spec.short_side,
        scales=[s for s in scales if s != spec.short_side],
        flip=any(v.endswith("_flip") for v in spec.views),
        pad_multiple=extra.get("pad_multiple", 32), amp=extra.get("amp", False), device=device)


def check_features(store: FeatureStore, video: str, feature_spec: dict, model: str) -> None:
    """The demo's features must be those the checkpoint was trained on."""
    check_feature_spec(feature_spec, store, [video], model, extra=False)


# ---- class activation maps ----------------------------------------------------------------

def has_relation_maps(head: torch.nn.Module) -> bool:
    return isinstance(head, RelationHead) and head.relation_grid is not None


@torch.inference_mode()
def class_activation_maps(head: RelationHead, context: torch.Tensor, rois: torch.Tensor,
                          classes: torch.Tensor, bank=None, valid: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """(N, h, w): for actor i, ``sum_c w[classes[i], c] * F_i[c]`` on the relation grid;
    ``valid`` (B, 2) or None: the image's cells of each map (:func:`pipeline.keyframes.batch`)."""
    head.eval()
    _, maps = head.relation_maps(context, rois, bank, valid=valid)      # (N, d, h, w)
    weight = head.relation_weight[classes]                              # (N, d)
    return torch.einsum("nc,nchw->nhw", weight, maps)


def cam_on_frame(cam: torch.Tensor, grid: tuple[float, float], view: ViewSpec,
                 size: tuple[int, int]) -> np.ndarray:
    """A map (h, w) on the relation grid -> (H, W) float32 in [0, 1] over a frame of
    ``size`` (W, H), bilinear, each cell at its place in the image.

    Cell i of the map is centred on context cell ``offset + step * i``; context cell c is
    centred on input pixel ``(c + 0.5) * feature_stride``; the frame fills ``view.valid``
    of the input (mirrored for a flipped view).
    """
    offset, step = grid
    h, w = cam.shape
    width, height = size

    def axis(n: int, lo: float, hi: float, cells: int, flip: bool) -> torch.Tensor:
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n               # frame, normalised
        u = 1 - u if flip else u
        c = (lo + u * (hi - lo)) / view.feature_stride - 0.5                # context cells
        m = (c - offset) / step                                             # map cells
        return (2 * m / (cells - 1) - 1) if cells > 1 else torch.zeros_like(m)

    x0, y0, x1, y1 = view.valid
    gx = axis(width, x0, x1, w, view.flip)
    gy = axis(height, y0, y1, h, False)
    grid_xy = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)   # (H, W, 2)
    up = F.grid_sample(cam[None, None].double(), grid_xy[None], mode="bilinear",
                       padding_mode="border", align_corners=True)[0, 0]
    lo, hi = up.min(), up.max()
    up = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
    return up.float().numpy()


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB frame (H, W, 3) with the jet-coloured ``heat`` (H, W) in [0, 1] blended over it."""
    colour = _jet()[np.clip(heat * 255 + 0.5, 0, 255).astype(np.uint8)]      # (H, W, 3)
    out = frame.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha
    return (out + 0.5).astype(np.uint8)


@lru_cache(maxsize=1)
def _jet() -> np.ndarray:
    """(256, 3) uint8: matplotlib's jet colour map as a lookup table."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap_margins(height: int, cfg: viz.VizConfig) -> tuple[int, int]:
    """(title band height, colour-bar strip width) in pixels for a frame of ``height``."""
    size = max(10, round(height * cfg.text_scale))
    return 2 * size, 5 * size


def frame_with_colour_bar(img: np.ndarray, title: str, cfg: viz.VizConfig) -> np.ndarray:
    """``img`` (H, W, 3) under a title band and beside a jet colour bar (0 .. 1, labelled
    ``CAM``): (H + band, W + strip, 3); the frame itself is untouched."""
    from PIL import ImageDraw

    h, w = img.shape[:2]
    band, strip = heatmap_margins(h, cfg)
    size = max(10, round(h * cfg.text_scale))
    font = viz._font(size)
    out = np.zeros((h + band, w + strip, 3), np.uint8)
    out[band:, :w] = img
    top, bottom = band + size, band + h - size        # the bar's extent (1 at the top)
    bar_x0, bar_x1 = w + size // 2, w + size // 2 + size
    ramp = _jet()[np.linspace(255, 0, bottom - top).round().astype(np.uint8)]   # (n, 3)
    out[top:bottom, bar_x0:bar_x1] = ramp[:, None, :]
    pil = Image.fromarray(out)
    d = ImageDraw.Draw(pil)
    d.text((size // 2, (band - size) // 2), title, fill=(255, 255, 255), font=font)
    for value, y in (("1", top), ("0", bottom - size), ("CAM", (top + bottom - size) // 2)):
        d.text((bar_x1 + 2, y), value, fill=(255, 255, 255), font=viz._font(max(8, size * 3 // 4)))
    return np.asarray(pil)


def _upscale(frame: np.ndarray, min_height: int = 360) -> np.ndarray:
    """Small frames (toy videos) enlarged by an integer factor, to be looked at."""
    f = -(-min_height // frame.shape[0])
    if f <= 1:
        return frame
    return np.asarray(Image.fromarray(frame).resize((frame.shape[1] * f, frame.shape[0] * f),
                                                    Image.BICUBIC))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "class"


def write_heatmaps(head: RelationHead, labelmap: LabelMap, store: FeatureStore,
                   video: Video, name: str, kfs: list, scores: np.ndarray, view: str,
                   out_dir: Path, time_offset: float, bank=None, batch_size: int = 8,
                   cfg: viz.VizConfig | None = None) -> list[Path]:
    """One PNG per person: the CAM of its top action over its keyframe.

    ``kfs`` are the predicted keyframes (:func:`pipeline.inference.test_keyframes`) and
    ``scores`` (persons, classes) their scores, persons in the order of ``kfs``.
    """
    cfg = cfg or viz.VizConfig()
    cache = FeatureCache(store, view)
    grid = head.relation_grid
    weight_rows = np.asarray(labelmap.ids)
    paths: list[Path] = []
    person = 0
    bar = progress(total=len(kfs), desc="heatmaps", unit="keyframe", leave=False)
    for s in range(0, len(kfs), batch_size):
        chunk = kfs[s:s + batch_size]
        context, rois, valid = batch(chunk, cache)
        top = scores[person:person + len(rois)].argmax(1)
        slots = bank.gather(chunk, flip=cache.view(name).flip) if bank else None
        cams = class_activation_maps(head, context, rois, torch.from_numpy(top), slots, valid)
        frames = video.read(video.index_at(np.array([k.timestamp - time_offset
                                                     for k in chunk], np.float64)))
        i = 0
        for k, frame in zip(chunk, frames, strict=True):
            big = _upscale(frame)
            size = (big.shape[1], big.shape[0])
            for j, box in enumerate(k.boxes):
                cls, score = int(top[i]), float(scores[person + i, top[i]])
                action = int(weight_rows[cls])
                heat = cam_on_frame(cams[i], grid, cache.view(name), size)
                img = viz.draw_frame(overlay(big, heat), [(box, [(action, score)])], labelmap,
                                     cfg, None, [j])
                img = frame_with_colour_bar(img, f"{name}  t={k.timestamp}s  person {j}  "
                                                 f"CAM: {labelmap.name(action)}", cfg)
                path = out_dir / f"{name}_{k.timestamp:04d}_{j}_{_slug(labelmap.name(action))}.png"
                with atomic_path(path) as tmp:
                    Image.fromarray(img).save(tmp, format="PNG", compress_level=3)
                paths.append(path)
                i += 1
            bar.update(1)
        person += len(rois)
    bar.close()
    return paths


# ---- the demo -----------------------------------------------------------------------------

def _link(video: Path, videos_dir: Path) -> Path:
    """``videos_dir`` holding only ``video`` (a symlink), for the directory-based stages."""
    try:
        videos_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArtifactError(videos_dir, "cannot write here: a file is in the way of --out"
                            ) from None
    for old in videos_dir.iterdir():
        old.unlink()
    link = videos_dir / video.name
    link.symlink_to(video.resolve())
    return link


def _raise_first(failures: list[str], link: Path, video: Path) -> None:
    if failures:
        raise ArtifactError(video, failures[0].replace(f"{link}: ", "", 1).replace(
            str(link), str(video)))


def run(cfg: DemoConfig, video: str | os.PathLike, model: str | os.PathLike,
        out_dir: str | os.PathLike, annotations: list[str | os.PathLike] | None = None,
        backbone_weights: str | None = None, bank_model: str | os.PathLike | None = None
        ) -> DemoResult:
    """detect -> extract (-> bank) -> predict -> render (-> heatmaps) on one video."""
    video, out_dir = Path(video), Path(out_dir)
    name = video.stem
    vr = open_video(video)                       # a bad file fails here, in one line
    ckpt = load_checkpoint(model)
    head, labelmap = load_head(ckpt, model), LabelMap.from_dict(ckpt["labelmap"])
    fspec = ckpt["feature_spec"]
    ecfg = extract_config(fspec, backbone_weights, cfg.device)
    if cfg.detector not in ("yolo", "gt"):
        raise ArtifactError(video, f"unknown detector '{cfg.detector}' (choose yolo, gt)")
    if cfg.detector == "gt" and not annotations:
        raise ArtifactError(video, "--detector gt needs --annotations CSV (its boxes)")
    if head.bank_request is not None and head.bank_request.kind == "acfb" and not bank_model:
        raise ArtifactError(model, "an acfb head reads the first-order maps of the acar that "
                            "built its bank: pass --bank-model ACAR.pt")
    work = out_dir / "work" / name
    link = _link(video, work / "videos")
    dets_path = work / "detections.parquet"

    say(f"1/4 detect persons ({cfg.detector}"
        + (f": {cfg.weights}, classes {cfg.classes}" if cfg.detector == "yolo" else "") + ")")
    dcfg = detect.DetectConfig(source=cfg.detector, weights=cfg.weights, classes=cfg.classes,
                               det_score_thr=cfg.det_score_thr,
                               keyframe_interval=cfg.keyframe_interval,
                               time_offset=cfg.time_offset, device=cfg.device)
    _raise_first(detect.run(dcfg, work / "videos", dets_path, annotations=annotations),
                 link, video)
    dets, _ = read_detections(dets_path, min_score=cfg.det_score_thr)
    if cfg.detector == "gt" and dets.empty:
        raise ArtifactError(annotations[0], f"no boxes for video '{name}'")

    say(f"2/4 features ({ecfg.backbone}, {fspec['weights']}, {fspec['clip_frames']}x"
        f"{fspec['clip_stride']} frames, views {', '.join(fspec['views'])})")
    features = str(work / "features.zarr")
    pred = pd.DataFrame({c: [] for c in PRED_COLUMNS})
    heatmaps: list[Path] = []
    kfs: list = []
    if dets.empty:
        say(f"no person scored >= {cfg.det_score_thr} on any keyframe")
    else:
        _raise_first(extract.run(ecfg, work / "videos", dets_path, features), link, video)
        store = FeatureStore(features)
        check_features(store, name, fspec, str(model))
        bank = _bank(head, cfg, features, name, dets_path, work, bank_model)

        say(f"3/4 predict ({ckpt['head']} head)")
        pred = predict(head, labelmap, store, dets, [name],
                       PredictConfig(det_score_thr=cfg.det_score_thr),
                       list(store.spec(name).views), bank)
        kfs = test_keyframes(store, dets, [name])
        if cfg.heatmap:
            heatmaps = _heatmaps(head, ckpt, labelmap, store, vr, name, kfs, pred, bank,
                                 out_dir, cfg)
    pred_path = out_dir / f"{name}.predictions.csv"
    write_predictions(pred, pred_path)

    say(f"4/4 render {name}_actions.mp4")
    vcfg = viz.VizConfig(action_score_thr=cfg.action_score_thr, top_k=cfg.top_k)
    mp4 = viz.render_video(video, out_dir / f"{name}_actions.mp4", pred, labelmap, vcfg)
    persons = sum(len(k.boxes) for k in kfs)
    return DemoResult(pred_path, mp4, heatmaps, persons, len(kfs))


def _bank(head, cfg: DemoConfig, features: str, name: str, dets_path: Path, work: Path,
          bank_model: str | os.PathLike | None):
    """The bank a bank head reads, built from this video's features (None: no bank)."""
    request = head.bank_request
    if request is None:
        return None
    kind = request.kind
    say(f"   {kind} bank of this video")
    bcfg = bank_stage.BankConfig(kind=kind, det_score_thr=cfg.det_score_thr,
                                 pool=request.pool or "none")
    url = str(work / f"{kind}.zarr")
    maker = _bank_model(bank_model, FeatureStore(features), name, work) if kind == "acfb" \
        else None
    failures = bank_stage.run(bcfg, features, dets_path, url, maker)
    if failures:
        raise ArtifactError(url, failures[0])
    return open_bank(url, head, FeatureStore(features).spec(name).to_dict())


def _bank_model(bank_model: str | os.PathLike, store: FeatureStore, name: str, work: Path
                ) -> Path:
    """The acar checkpoint that makes an acfb bank, checked against this video's features.

    The bank stage wants the exact feature spec; where only ``extra`` differs (another time
    offset, or a store written before ``extra`` was recorded) a copy carrying this video's
    spec is used.
    """
    ckpt = load_checkpoint(bank_model)
    check_features(store, name, ckpt["feature_spec"], str(bank_model))
    spec = store.spec(name).to_dict()
    if FeatureSpec.from_dict(ckpt["feature_spec"]).to_dict() == spec:
        return Path(bank_model)
    path = work / "bank_model.pt"
    save_checkpoint({**ckpt, "feature_spec": {**ckpt["feature_spec"], **spec}}, path)
    return path


def _heatmaps(head, ckpt: dict, labelmap: LabelMap, store: FeatureStore, vr: Video, name: str,
              kfs: list, pred: pd.DataFrame, bank, out_dir: Path, cfg: DemoConfig
              ) -> list[Path]:
    if not has_relation_maps(head):
        say(f"--heatmap: the {ckpt['head']} head has no spatial relation maps (only acrn, "
            "acar and acfb do); no heatmaps")
        return []
    say("   heatmaps: class activation maps of each person's top action")
    scores = pred["score"].to_numpy(np.float32).reshape(-1, labelmap.num_classes)
    assert len(scores) == sum(len(k.boxes) for k in kfs)
    out = out_dir / "heatmaps"
    for old in out.glob(f"{name}_*.png") if out.is_dir() else []:
        if re.fullmatch(rf"{re.escape(name)}_\d+_\d+_[^_]+\.png", old.name):
            old.unlink()                         # a rerun leaves no stale maps
    view = ckpt["feature_spec"].get("train_view") or store.spec(name).views[0]
    offset = float(store.attrs(name).get("extra", {}).get("time_offset") or 0)
    return write_heatmaps(head, labelmap, store, vr, name, kfs, scores, view,
                          out, offset, bank,
                          cfg=HEATMAP_VIZ)
