"""Predictions: a CSV in the AVA result format, no header, one row per (box, class)::

    video_id, timestamp, x1, y1, x2, y2, action_id, score
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from . import ArtifactError
from .csvio import line_of_row, read_csv, write_csv

COLUMNS = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score"]
SCHEMA = {"video_id": "str", "timestamp": "int", "x1": "float", "y1": "float", "x2": "float",
          "y2": "float", "action_id": "int", "score": "float"}


def read_predictions(path: str | os.PathLike, *, categorical: bool = False) -> pd.DataFrame:
    """Read a predictions CSV; ``categorical``: ``video_id`` as a pandas Categorical (fast)."""
    return read_csv(path, SCHEMA, categorical=categorical)


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(df, path, COLUMNS, float_format="%.6g", int_widths={"timestamp": 4})


def check_values(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Scores are probabilities (finite, in [0, 1]) and boxes finite and normalised to
    [0, 1] (pixel boxes would score 0 and draw off the frame in silence), else one
    :class:`ArtifactError` naming the file's line."""
    score = df["score"].to_numpy(np.float64)
    boxes = df[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)                 # (N, 4)
    tol = 1e-6
    for bad, problem in ((~((score >= 0) & (score <= 1)),
                          "score must be in [0, 1] (a probability), got {}"),
                         (~((boxes >= -tol) & (boxes <= 1 + tol)).all(axis=1),
                          "box coordinates must be finite and normalised to [0, 1], got {}")):
        if bad.any():
            row = int(np.argmax(bad))
            value = score[row] if "score" in problem else boxes[row].tolist()
            raise ArtifactError(path, problem.format(value), line_of_row(path, row))
