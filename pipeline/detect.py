"""Stage ``detect``: person boxes on keyframes -> ``detections.parquet``.

Sources:

* ``gt``: the boxes of an annotation CSV, score 1.0 (for training on GT boxes, and
  for synthetic data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from .artifacts import ArtifactError
from .artifacts.annotations import read_annotations
from .artifacts.detections import COLUMNS, write_detections
from .video import list_videos


@dataclass
class DetectConfig:
    source: str = "gt"                   # gt | yolo | proposals
    weights: str = "yolo11n.pt"          # yolo: a weights name (downloads) or a path
    classes: list[int] = field(default_factory=lambda: [0])  # yolo: class ids that are persons
    min_score: float = 0.1               # keep every box at or above this floor


def from_annotations(paths: list[str | os.PathLike], videos: set[str] | None = None
                     ) -> pd.DataFrame:
    """Unique GT person boxes per keyframe, score 1.0, optionally only for ``videos``."""
    frames = [read_annotations(p) for p in paths]
    gt = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if videos is not None:
        gt = gt[gt["video_id"].isin(videos)]
    boxes = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
    return boxes.assign(score=1.0).reset_index(drop=True)


def run(cfg: DetectConfig, videos_dir: str | os.PathLike | None, out: str | os.PathLike,
        annotations: list[str | os.PathLike] | None = None) -> pd.DataFrame:
    """Detect persons and write ``out``; returns the detections table."""
    if cfg.source == "gt":
        if not annotations:
            raise ArtifactError(out, "--source gt needs --annotations CSV")
        videos = set(list_videos(videos_dir)) if videos_dir else None
        df = from_annotations(annotations, videos)
        meta = {"source": "gt", "annotations": [str(a) for a in annotations]}
    else:
        raise ArtifactError(out, f"unknown detection source '{cfg.source}'")
    write_detections(df, out, meta)
    return df
