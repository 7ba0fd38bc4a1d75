"""Stage ``detect``: person boxes on keyframes -> ``detections.parquet``.

Sources:

* ``yolo``: an Ultralytics YOLO detector on the keyframes of every video.  Keyframes
  are one per ``keyframe_interval`` seconds of video (``timestamp = video time +
  time_offset``), or exactly the ``(video_id, timestamp)`` pairs of timestamps files
  (an AVA annotation or proposals CSV, or a two-column ``video_id,timestamp`` CSV).
  ``weights`` is an ultralytics weights name (downloaded on first use when online) or a
  path to any ultralytics checkpoint; ``classes`` are the class ids that are persons
  (merged by class-agnostic NMS).  Every box scoring at least ``det_score_thr`` is kept;
  consumers apply their own thresholds.  Boxes are normalised to the original frame.
  Frames are decoded by DataLoader workers while the detector runs batched (cuda when
  available).  A video that cannot be read is reported and the others are still done.
* ``gt``: the boxes of an annotation CSV, score 1.0 (for training on GT boxes, and
  for synthetic data).
* ``proposals``: published person proposals in the AVA/SlowFast CSV form
  (:mod:`pipeline.artifacts.proposals`).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations, read_excluded
from .artifacts.detections import COLUMNS, write_detections
from .artifacts.proposals import read_proposals
from .distributed import worker_init
from .progress import progress
from .video import VIDEO_EXTS, Video, list_videos, no_videos_error, read_image

YOLO_WEIGHTS = "yolo11n.pt"              # the default detector of detect and demo


@dataclass
class DetectConfig:
    source: str = "gt"                   # gt | yolo | proposals
    weights: str = YOLO_WEIGHTS          # yolo: a weights name (downloads) or a path
    classes: list[int] = field(default_factory=lambda: [0])  # yolo: class ids that are persons
    det_score_thr: float = 0.1           # keep every box at or above this floor
    iou: float = 0.7                     # yolo: NMS IoU threshold
    imgsz: int = 640                     # yolo: inference size (long side, letterboxed)
    max_det: int = 300                   # yolo: boxes per frame at most
    batch_size: int = 16                 # yolo: frames per forward pass
    keyframe_interval: int = 1           # seconds between keyframes (no timestamps file)
    time_offset: int = 0                 # timestamp = video time + offset (AVA cuts: 900)
    device: str = "auto"                 # auto | cpu | cuda[:i]
    half: bool = False                   # cuda: float16 inference
    num_workers: int | None = None       # decoding workers; None: min(4, cores - 1)


# ---- keyframes ------------------------------------------------------------------------

def read_keyframes(paths: Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """video_id -> sorted unique timestamps listed in timestamps files.

    Each file is an AVA annotation CSV, an AVA/SlowFast proposals CSV (empty 7th
    column) or a two-column ``video_id,timestamp`` CSV (like AVA's excluded timestamps).
    """
    frames = []
    for path in paths:
        try:
            with open(path, encoding="utf-8-sig", errors="replace") as fh:
                first = next((ln for ln in fh if ln.strip()), "")
        except OSError:
            raise ArtifactError(path, "file not found") from None
        cols = first.rstrip("\r\n").split(",")
        if len(cols) == 2:
            df = read_excluded(path)
        elif len(cols) == 8 and not cols[6].strip():
            df = read_proposals(path)
        elif len(cols) in (7, 8):
            df = read_annotations(path)
        elif not first:
            continue
        else:
            raise ArtifactError(path, f"expected 2 (video_id,timestamp), 7 or 8 columns, "
                                f"got {len(cols)}", 1)
        frames.append(df[["video_id", "timestamp"]])
    if not frames:
        return {}
    both = pd.concat(frames, ignore_index=True)
    return {str(v): np.unique(g["timestamp"].to_numpy(np.int64))
            for v, g in both.groupby("video_id", sort=True)}


def default_keyframes(video: Video, interval: int = 1, offset: int = 0) -> np.ndarray:
    """Timestamps of one keyframe per ``interval`` seconds inside the video."""
    first, last = float(video.times[0]), float(video.times[-1]) + 0.5 / video.fps
    start = int(np.ceil(max(first, 0.0) / interval - 1e-9)) * interval
    return np.arange(start, int(np.floor(last + 1e-9)) + 1, interval, dtype=np.int64) + offset


# ---- the detector -------------------------------------------------------------------------

def _device(name: str) -> str:
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return name


def _no_autoinstall() -> None:
    """Turn ultralytics' run-time pip installs off through its own flag (read once, at
    its import, from ``YOLO_AUTOINSTALL``), leaving ``os.environ`` alone; a
    ``YOLO_AUTOINSTALL`` that the user set is still obeyed."""
    import ultralytics.utils
    import ultralytics.utils.checks

    allowed = ultralytics.utils.env_bool("YOLO_AUTOINSTALL", False)
    ultralytics.utils.AUTOINSTALL = ultralytics.utils.checks.AUTOINSTALL = allowed


def load_yolo(weights: str):
    """An ultralytics YOLO detector from a path, a cached name, or a download.

    Offline with a name that is not cached, this fails at once with an ArtifactError
    saying how to pass a path (ultralytics itself would try to download).
    """
    _no_autoinstall()
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS, is_online

    path = Path(weights).expanduser()
    hint = "pass --weights PATH to a local ultralytics checkpoint (.pt)"
    if not path.is_file():
        if path.parent != Path(".") or path.suffix not in (".pt", ".yaml", ".yml", ""):
            raise ArtifactError(weights, "weights file not found")
        cached = Path(SETTINGS["weights_dir"]) / path.name
        if cached.is_file():
            path = cached
        elif not is_online():
            raise ArtifactError(weights, f"not cached (in . or {SETTINGS['weights_dir']}) and "
                                f"no internet to download it; {hint}")
        else:
            path = cached   # ultralytics downloads it there
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        model = YOLO(str(path))
    except Exception as err:  # noqa: BLE001 - ultralytics raises many kinds
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0][:160]
        raise ArtifactError(weights, f"cannot load ultralytics weights ({first}); {hint}"
                            ) from None
    finally:
        socket.setdefaulttimeout(old)
    if model.task != "detect":
        raise ArtifactError(weights, f"a '{model.task}' model, not a detector")
    return model


class PersonDetector:
    """YOLO on RGB frames -> per frame (n, 5) float32 ``x1, y1, x2, y2, score``.

    Coordinates are normalised to [0, 1] of each original frame (ultralytics undoes its
    letterboxing).  Boxes of all ``classes`` go through one class-agnostic NMS.
    """

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg
        self.model = load_yolo(cfg.weights)
        names = self.model.names
        unknown = [c for c in cfg.classes if c not in names]
        if unknown or not cfg.classes:
            raise ArtifactError(cfg.weights, f"class ids {unknown or '[]'} are not in the "
                                f"model's classes {dict(names)}")
        self.device = _device(cfg.device)
        self.half = bool(cfg.half and self.device.startswith("cuda"))
        from ultralytics.cfg import DEFAULT_CFG_DICT

        # ultralytics >= 8.4 spells float16 `quantize=16`; older versions `half=True`
        self._precision = {} if not self.half else \
            {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}
        # ultralytics keeps conf > threshold; we keep score >= det_score_thr
        self.conf = float(np.nextafter(np.float32(cfg.det_score_thr), np.float32(0)))

    @property
    def meta(self) -> dict:
        return {"weights": str(self.cfg.weights), "classes": list(self.cfg.classes),
                "class_names": [self.model.names[c] for c in self.cfg.classes],
                "det_score_thr": self.cfg.det_score_thr, "iou": self.cfg.iou,
                "imgsz": self.cfg.imgsz, "max_det": self.cfg.max_det}

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(frames) == 0:
            return []
        bgr = [np.ascontiguousarray(np.asarray(f)[:, :, ::-1]) for f in frames]
        results = self.model.predict(
            bgr, conf=self.conf, iou=self.cfg.iou, classes=list(self.cfg.classes),
            agnostic_nms=True, imgsz=self.cfg.imgsz, max_det=self.cfg.max_det,
            device=self.device, batch=len(bgr), verbose=False, **self._precision)
        out = []
        for r in results:
            xyxyn = r.boxes.xyxyn.float().cpu().numpy().reshape(-1, 4)
            conf = r.boxes.conf.float().cpu().numpy().reshape(-1, 1)
            boxes = np.concatenate([np.clip(xyxyn, 0.0, 1.0), conf], axis=1).astype(np.float32)
            out.append(boxes[boxes[:, 4] >= np.float32(self.cfg.det_score_thr)])
        return out


def detect_image(detector: PersonDetector, path: str | os.PathLike) -> np.ndarray:
    """Person boxes (n, 5) of one still image, through the same detector."""
    return detector([read_image(path)])[0]


# ---- decoding workers ------------------------------------------------------------------

class _KeyframeSource(IterableDataset):
    """Decodes the keyframes of each video in chunks of ``batch`` frames (workers)."""

    def __init__(self, videos: list[tuple[str, Path, np.ndarray | None]], cfg: DetectConfig):
        self.videos, self.cfg = videos, cfg

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for video_id, path, stamps in self.videos[w::n]:
            try:
                yield from self._chunks(video_id, path, stamps)
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the run
                msg = str(err) if isinstance(err, ArtifactError) else \
                    f"{path}: {err.__class__.__name__}: {str(err)[:200]}"
                yield {"video": video_id, "error": msg}

    def _chunks(self, video_id: str, path: Path, stamps: np.ndarray | None):
        video = Video(path)
        cfg = self.cfg
        if stamps is None:
            stamps = default_keyframes(video, cfg.keyframe_interval, cfg.time_offset)
        times = stamps.astype(np.float64) - cfg.time_offset
        lo, hi = float(video.times[0]) - 1.0, float(video.times[-1]) + 1.0
        outside = stamps[(times < lo) | (times > hi)]
        if len(outside):
            raise ArtifactError(path, f"timestamp {int(outside[0])} is outside the video "
                                f"(0-{video.info.duration:.1f} s, time_offset "
                                f"{cfg.time_offset})")
        idx = video.index_at(times)
        if len(stamps) == 0:
            yield {"video": video_id, "total": 0, "stamps": torch.zeros(0, dtype=torch.int64),
                   "frames": torch.zeros(0, video.height, video.width, 3, dtype=torch.uint8)}
        for s in range(0, len(stamps), cfg.batch_size):
            frames = video.read(idx[s:s + cfg.batch_size])
            yield {"video": video_id, "total": len(stamps),
                   "stamps": torch.from_numpy(stamps[s:s + cfg.batch_size]),
                   "frames": torch.from_numpy(frames)}


def _workers(n: int | None) -> int:
    return max(0, min(4, (os.cpu_count() or 2) - 1)) if n is None else n


def detect_videos(cfg: DetectConfig, videos_dir: str | os.PathLike,
                  keyframes: dict[str, np.ndarray] | None = None,
                  detector: PersonDetector | None = None, recursive: bool = False
                  ) -> tuple[pd.DataFrame, list[str], dict]:
    """Detect persons on keyframes.  Returns ``(rows, failures, detector meta)``.

    ``keyframes``: video_id -> timestamps (a video missing from ``videos_dir`` is a
    failure); ``None``: every video of ``videos_dir``, one keyframe per
    ``keyframe_interval`` seconds.
    """
    paths = list_videos(videos_dir, recursive)
    detector = detector or PersonDetector(cfg)
    todo = sorted(keyframes) if keyframes is not None else sorted(paths)
    jobs = [(v, paths.get(v, Path(videos_dir) / v), None if keyframes is None
             else keyframes[v]) for v in todo]
    source = _KeyframeSource(jobs, cfg)
    nw = min(_workers(cfg.num_workers), len(jobs))
    loader = DataLoader(source, batch_size=None, num_workers=nw,
                        prefetch_factor=2 if nw else None,
                        worker_init_fn=worker_init() if nw else None)
    rows: list[pd.DataFrame] = []
    failures: list[str] = []
    seen: dict[str, int] = {}
    vbar = progress(total=len(jobs), desc="detect", unit="video", dynamic_ncols=True)
    fbar = progress(total=0, desc="frames", unit="frame", dynamic_ncols=True, leave=False)
    try:
        for chunk in loader:
            video = chunk["video"]
            if "error" in chunk:
                failures.append(chunk["error"])
                tqdm.write(f"error: {chunk['error']}", file=sys.stderr)
                vbar.update(1)
                continue
            total = int(chunk["total"])
            fbar.set_postfix_str(video, refresh=False)   # the video being detected, shown
            if video not in seen:                         # by the refresh or the update
                seen[video] = 0
                fbar.total += total
                fbar.refresh()
            stamps = chunk["stamps"].numpy()
            boxes = detector(list(chunk["frames"].numpy()))
            for t, b in zip(stamps, boxes, strict=True):
                if len(b):
                    rows.append(pd.DataFrame({"video_id": video, "timestamp": int(t),
                                              "x1": b[:, 0], "y1": b[:, 1], "x2": b[:, 2],
                                              "y2": b[:, 3], "score": b[:, 4]}))
            seen[video] += len(stamps)
            fbar.update(len(stamps))
            if seen[video] >= total:
                vbar.update(1)
    finally:
        fbar.close()
        vbar.close()
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        {c: pd.Series([], dtype=object if c == "video_id" else float) for c in COLUMNS})
    return df, failures, detector.meta


# ---- the other sources -------------------------------------------------------------------

def from_annotations(paths: list[str | os.PathLike], videos: set[str] | None = None
                     ) -> pd.DataFrame:
    """Unique GT person boxes per keyframe, score 1.0, optionally only for ``videos``."""
    frames = [read_annotations(p) for p in paths]
    gt = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if videos is not None:
        gt = gt[gt["video_id"].isin(videos)]
    boxes = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
    return boxes.assign(score=1.0).reset_index(drop=True)


def from_proposals(paths: list[str | os.PathLike], videos: set[str] | None = None,
                   min_score: float = 0.0) -> pd.DataFrame:
    """Boxes of AVA/SlowFast proposal CSVs with score >= ``min_score``."""
    frames = [read_proposals(p) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if videos is not None:
        df = df[df["video_id"].isin(videos)]
    return df[df["score"] >= min_score].reset_index(drop=True)


def _video_ids(videos_dir: str | os.PathLike | None, allow_empty: bool,
               recursive: bool = False) -> set[str] | None:
    """The video ids of ``videos_dir`` (None: no folder given); a folder without a
    video is an error naming what it holds, unless ``allow_empty``."""
    if videos_dir is None:
        return None
    paths = list_videos(videos_dir, recursive)
    if not paths and not allow_empty:
        raise no_videos_error(videos_dir, VIDEO_EXTS)
    return set(paths)


def _none_kept(what: str, df_all: pd.DataFrame, videos_dir) -> str:
    """Why a source with rows gave no detection: its videos are not in ``videos_dir``."""
    ids = sorted(set(df_all["video_id"]))
    return (f"none of the {len(ids)} videos of the {what} ({', '.join(ids[:3])}"
            f"{', ...' if len(ids) > 3 else ''}) is in {videos_dir}")


def run(cfg: DetectConfig, videos_dir: str | os.PathLike | None, out: str | os.PathLike,
        annotations: list[str | os.PathLike] | None = None,
        proposals: list[str | os.PathLike] | None = None,
        timestamps: list[str | os.PathLike] | None = None,
        allow_empty: bool = True, recursive: bool = False) -> list[str]:
    """Detect persons and write ``out``; returns the failures (one line each).

    The detections of every video that worked are written even when others failed.
    With ``allow_empty`` false (the CLI's default: ``--allow-empty`` sets it), no
    detection at all (an empty videos folder, no row in the CSVs, no box) is an error and
    nothing is written.  Library callers (the demo: a video may show nobody) get an empty
    table by default.
    """
    failures: list[str] = []
    why_empty = ""
    if cfg.source == "gt":
        if not annotations:
            raise ArtifactError(out, "--source gt needs --annotations CSV")
        videos = _video_ids(videos_dir, allow_empty, recursive)
        df = from_annotations(annotations, videos)
        if videos is not None and df.empty:
            why_empty = _none_kept("annotations", from_annotations(annotations),
                                   videos_dir)
        meta = {"source": "gt", "annotations": [str(a) for a in annotations]}
    elif cfg.source == "proposals":
        if not proposals:
            raise ArtifactError(out, "--source proposals needs a proposals CSV")
        videos = _video_ids(videos_dir, allow_empty, recursive)
        df = from_proposals(proposals, videos, cfg.det_score_thr)
        meta = {"source": "proposals", "proposals": [str(p) for p in proposals],
                "det_score_thr": cfg.det_score_thr}
    elif cfg.source == "yolo":
        if videos_dir is None:
            raise ArtifactError(out, "--source yolo needs --videos DIR")
        keyframes = read_keyframes(timestamps) if timestamps else None
        if keyframes is None:
            _video_ids(videos_dir, allow_empty, recursive)
        elif not keyframes and not allow_empty:
            raise ArtifactError(timestamps[0], "no (video_id, timestamp) row in the "
                                "timestamps files")
        df, failures, det_meta = detect_videos(cfg, videos_dir, keyframes,
                                                recursive=recursive)
        meta = {"source": "yolo", **det_meta, "keyframes": [str(t) for t in timestamps or []]
                or f"every {cfg.keyframe_interval} s", "failed": failures}
    else:
        raise ArtifactError(out, f"unknown detection source '{cfg.source}'")
    meta["time_offset"] = cfg.time_offset
    meta["config"] = asdict(cfg)
    if df.empty and not allow_empty:
        if failures:        # every video failed: the failures say why; write nothing
            return failures
        raise ArtifactError(out, f"not written: no detections ({why_empty or 'no box'}); pass "
                            "--allow-empty to write an empty table")
    write_detections(df, out, meta, allow_empty=allow_empty)
    tqdm.write(summary_line(cfg.source, df, failures, out))
    return failures


def summary_line(source: str, df: pd.DataFrame, failures: list[str],
                 out: str | os.PathLike) -> str:
    """The end line: ``detect (yolo): 4 videos, 120 keyframes, 310 boxes, 0 failed
    (det.parquet)``; videos and keyframes are those with at least one box."""
    keyframes = len(df[["video_id", "timestamp"]].drop_duplicates()) if len(df) else 0
    return (f"detect ({source}): {df['video_id'].nunique():,} videos, {keyframes:,} "
            f"keyframes, {len(df):,} boxes, {len(failures)} failed ({out})")
