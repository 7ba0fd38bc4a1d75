"""Predictions: a CSV in the AVA result format, no header, one row per (box, class)::

    video_id, timestamp, x1, y1, x2, y2, action_id, score
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from . import ArtifactError
from .csvio import Codes, line_of_row, read_columns, read_csv, write_csv

if TYPE_CHECKING:  # pandas is imported where a DataFrame is built (scoring needs none)
    import pandas as pd

COLUMNS = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score"]
SCHEMA = {"video_id": "str", "timestamp": "int", "x1": "float", "y1": "float", "x2": "float",
          "y2": "float", "action_id": "int", "score": "float"}


def read_predictions(path: str | os.PathLike, *, categorical: bool = False) -> pd.DataFrame:
    """Read a predictions CSV; ``categorical``: ``video_id`` as a pandas Categorical (fast)."""
    return read_csv(path, SCHEMA, categorical=categorical)


def read_prediction_columns(path: str | os.PathLike) -> dict[str, np.ndarray | Codes]:
    """A predictions CSV as numpy columns, without pandas (the scoring path of big files):
    ``video_id`` as :class:`~.csvio.Codes`, the others int64 / float64."""
    return read_columns(path, SCHEMA)


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(df, path, COLUMNS, float_format="%.6g", int_widths={"timestamp": 4})


def check_values(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Scores are probabilities (finite, in [0, 1]) and boxes finite and normalised to
    [0, 1] (pixel boxes would score 0 and draw off the frame in silence), else one
    :class:`ArtifactError` naming the file's line.

    Column by column, a min and a max each (NaN fails both); the masks that find the line
    are built only for a file that fails (8.6M rows: 0.02 s, against 1.3 s for the
    comparisons of a stacked (N, 4) box array)."""
    score = np.asarray(df["score"], np.float64)                              # DataFrame or
    boxes = [np.asarray(df[c], np.float64) for c in ("x1", "y1", "x2", "y2")]  # dict of columns
    tol = 1e-6
    if not _within(score, 0.0, 1.0):
        row = int(np.argmax(~((score >= 0) & (score <= 1))))
        raise ArtifactError(path, f"score must be in [0, 1] (a probability), got {score[row]}",
                            line_of_row(path, row))
    if not all(_within(c, -tol, 1 + tol) for c in boxes):
        bad = np.zeros(len(score), dtype=bool)                               # (N,)
        for c in boxes:
            bad |= ~((c >= -tol) & (c <= 1 + tol))
        row = int(np.argmax(bad))
        raise ArtifactError(path, "box coordinates must be finite and normalised to [0, 1], "
                                  f"got {[float(c[row]) for c in boxes]}",
                            line_of_row(path, row))


def _within(values: np.ndarray, lo: float, hi: float) -> bool:
    """Every value in [lo, hi] (False for NaN: min and max propagate it)."""
    return not len(values) or bool(values.min() >= lo and values.max() <= hi)
