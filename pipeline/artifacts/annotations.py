"""AVA annotation CSVs (ground truth) and excluded-timestamp CSVs.

Annotations: no header, one row per (person box, action)::

    video_id, timestamp, x1, y1, x2, y2, action_id, person_id

``timestamp`` is in integer seconds (``0902`` == ``902``); boxes are normalised to
[0, 1] of the original frame.  Excluded timestamps: ``video_id, timestamp``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from . import ArtifactError
from .csvio import Codes, line_of_row, read_columns, read_csv, write_csv

if TYPE_CHECKING:  # pandas is imported where a DataFrame is built (scoring needs none)
    import pandas as pd

COLUMNS = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id"]
SCHEMA = {"video_id": "str", "timestamp": "int", "x1": "float", "y1": "float", "x2": "float",
          "y2": "float", "action_id": "int", "person_id": "int"}
EXCLUDED_COLUMNS = ["video_id", "timestamp"]
EXCLUDED_SCHEMA = {"video_id": "str", "timestamp": "int"}


def read_annotations(path: str | os.PathLike) -> pd.DataFrame:
    """Read an AVA ground-truth CSV.  ``person_id`` may be absent (then -1)."""
    df = read_csv(path, SCHEMA, min_columns=7) if _needs_slow(path) else read_csv(path, SCHEMA)
    df["person_id"] = df["person_id"].fillna(-1).astype(np.int64)
    _check_boxes(df, path)
    return df


def read_annotation_columns(path: str | os.PathLike) -> dict[str, np.ndarray | Codes]:
    """:func:`read_annotations` without pandas (see :func:`csvio.read_columns`)."""
    cols = read_columns(path, SCHEMA, min_columns=7) if _needs_slow(path) else \
        read_columns(path, SCHEMA)
    pid = cols["person_id"]
    if pid.dtype.kind == "f":
        cols["person_id"] = np.where(np.isnan(pid), -1, pid).astype(np.int64)
    _check_boxes(cols, path)
    return cols


def _needs_slow(path: str | os.PathLike) -> bool:
    """AVA files always carry person_id; we also accept 7-column files (person_id omitted)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return False
    return first.count(",") == 6


def _check_boxes(df, path: str | os.PathLike) -> None:
    """``df``: a DataFrame or a dict of columns."""
    boxes = np.stack([np.asarray(df[c], dtype=np.float64) for c in ("x1", "y1", "x2", "y2")],
                     axis=1)
    bad = ~((boxes >= -1e-6) & (boxes <= 1 + 1e-6)).all(axis=1)
    if bad.any():
        line = line_of_row(path, int(np.flatnonzero(bad)[0]))
        raise ArtifactError(path, "box coordinates must be normalised to [0, 1]", line)
    inverted = (boxes[:, 0] > boxes[:, 2] + 1e-6) | (boxes[:, 1] > boxes[:, 3] + 1e-6)
    if inverted.any():
        line = line_of_row(path, int(np.flatnonzero(inverted)[0]))
        raise ArtifactError(path, "inverted box (x1 > x2 or y1 > y2)", line)


def write_annotations(df: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(df, path, COLUMNS, float_format="%.3f", int_widths={"timestamp": 4})


def read_excluded(path: str | os.PathLike | None) -> pd.DataFrame:
    """Read an excluded-timestamps CSV (``None`` gives an empty table)."""
    import pandas as pd

    if path is None:
        return pd.DataFrame({"video_id": pd.Series([], dtype=object),
                             "timestamp": pd.Series([], dtype=np.int64)})
    return read_csv(path, EXCLUDED_SCHEMA)


def write_excluded(df: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(df, path, EXCLUDED_COLUMNS, int_widths={"timestamp": 4})


def person_boxes(df: pd.DataFrame, num_classes_index: dict[int, int]) -> pd.DataFrame:
    """Collapse per-action rows into one row per person box with a multi-hot label list.

    Returns columns ``video_id, timestamp, x1, y1, x2, y2, labels`` where ``labels``
    is a sorted list of class *indices* (positions in the label map, see
    :class:`pipeline.artifacts.labelmap.LabelMap.index`).  Actions not in the label
    map are dropped.
    """
    import pandas as pd

    keep = df[df["action_id"].isin(list(num_classes_index))]
    keys = ["video_id", "timestamp", "x1", "y1", "x2", "y2"]
    rows = []
    for key, grp in keep.groupby(keys, sort=True):
        rows.append((*key, sorted({num_classes_index[a] for a in grp["action_id"]})))
    return pd.DataFrame(rows, columns=[*keys, "labels"])
