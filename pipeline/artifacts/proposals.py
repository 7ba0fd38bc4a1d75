"""Published person proposals: the AVA / SlowFast detection CSV, no header::

    video_id, timestamp, x1, y1, x2, y2, action_id, score

``action_id`` is usually empty (``vid,0902,0.1,0.2,0.5,0.9,,0.98``); where a file repeats a
box once per action, the box is kept once with its highest score.  Boxes are normalised
to [0, 1] of the original frame, ``timestamp`` in integer seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from . import ArtifactError
from .csvio import _diagnose

COLUMNS = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score"]
SCHEMA = {"video_id": "str", "timestamp": "int", "x1": "float", "y1": "float", "x2": "float",
          "y2": "float", "action_id": "int", "score": "float"}
_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
BOX_COLUMNS = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "score"]


def read_proposals(path: str | os.PathLike) -> pd.DataFrame:
    """Unique proposal boxes: columns ``video_id, timestamp, x1, y1, x2, y2, score``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "file not found")
    if path.stat().st_size == 0 or not path.read_bytes()[:4096].strip():
        return pd.DataFrame({c: pd.Series([], dtype=object if c == "video_id" else float)
                             for c in BOX_COLUMNS})
    try:
        table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(column_names=COLUMNS),
            convert_options=pacsv.ConvertOptions(
                column_types={n: _ARROW[k] for n, k in SCHEMA.items()},
                strings_can_be_null=False))
        df = table.to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as err:
        _check_lines(path)
        raise ArtifactError(path, f"cannot parse proposals CSV ({err})") from None
    for name in COLUMNS:
        if name != "action_id" and df[name].isna().any():
            line = int(np.flatnonzero(df[name].isna().to_numpy())[0]) + 1
            raise ArtifactError(path, f"empty value in column '{name}'", line)
    boxes = df[["x1", "y1", "x2", "y2"]].to_numpy()
    bad = ~((boxes >= -1e-6) & (boxes <= 1 + 1e-6)).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) \
        | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise ArtifactError(path, "boxes must be normalised to [0, 1] with x1 <= x2, y1 <= y2",
                            int(np.flatnonzero(bad)[0]) + 1)
    df = df[BOX_COLUMNS].sort_values("score", ascending=False, kind="stable")
    df = df.drop_duplicates(["video_id", "timestamp", "x1", "y1", "x2", "y2"])
    return df.sort_values(["video_id", "timestamp"], kind="stable").reset_index(drop=True)


def _check_lines(path: Path) -> None:
    """Slow pass that raises at the first bad line (8 columns, action_id may be empty)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for lineno, fields in enumerate(csv.reader(fh), start=1):
                if any(f.strip() for f in fields) and len(fields) != 8:
                    raise ArtifactError(path, f"expected 8 columns (video,sec,x1,y1,x2,y2,,"
                                        f"score), got {len(fields)}", lineno)
    except UnicodeDecodeError as err:
        raise ArtifactError(path, f"not a text CSV file ({err.reason})") from None
    rows = _diagnose(path, SCHEMA, min_columns=6)
    for lineno, row in enumerate(rows, start=1):
        if isinstance(row[7], float) and np.isnan(row[7]):
            raise ArtifactError(path, "expected 8 columns (video,sec,x1,y1,x2,y2,,score)",
                                lineno)
