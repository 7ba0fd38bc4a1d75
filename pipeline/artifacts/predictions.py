"""Predictions: a CSV in the AVA result format, no header, one row per (box, class)::

    video_id, timestamp, x1, y1, x2, y2, action_id, score

and beside it (``predictions.csv`` -> ``predictions.parquet``: :func:`table_path`) the same
rows with the raw logit of each score: the *prediction table*, a Parquet file with the
columns (exact names and types)::

    video_id: string, timestamp: int32, x1, y1, x2, y2: float32, action_id: int32,
    score: float32, logit: float32 (optional)

``score`` is the head's activation of ``logit`` (a softmax over the label map's pose classes,
a sigmoid for the others: :func:`pipeline.losses.activate`), ``logit`` the mean over the
test-time views that eval activates.  A table without ``logit`` (an ensemble of scores has
none) holds scores only.  JSON under the Parquet metadata key ``acar`` says what wrote it.
The official result CSV stays the 8 columns above; the table is for acar's own readers
(``acar ensemble``), and an older acar's eval wrote no table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import ArtifactError
from .csvio import Codes, line_of_row, read_columns, read_csv, write_csv

if TYPE_CHECKING:  # pandas is imported where a DataFrame is built (scoring needs none)
    import pandas as pd

COLUMNS = ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score"]
SCHEMA = {"video_id": "str", "timestamp": "int", "x1": "float", "y1": "float", "x2": "float",
          "y2": "float", "action_id": "int", "score": "float"}


TABLE_TYPES = {"video_id": "string", "timestamp": "int32", "x1": "float32", "y1": "float32",
               "x2": "float32", "y2": "float32", "action_id": "int32", "score": "float32",
               "logit": "float32"}
META_KEY = b"acar"


def read_predictions(path: str | os.PathLike, *, categorical: bool = False) -> pd.DataFrame:
    """Read a predictions CSV; ``categorical``: ``video_id`` as a pandas Categorical (fast)."""
    return read_csv(path, SCHEMA, categorical=categorical)


def read_prediction_columns(path: str | os.PathLike) -> dict[str, np.ndarray | Codes]:
    """A predictions CSV as numpy columns, without pandas (the scoring path of big files):
    ``video_id`` as :class:`~.csvio.Codes`, the others int64 / float64."""
    return read_columns(path, SCHEMA)


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(df, path, COLUMNS, float_format="%.6g", int_widths={"timestamp": 4})


def check_values(df: pd.DataFrame, path: str | os.PathLike, csv: bool = True) -> None:
    """Scores are probabilities (finite, in [0, 1]) and boxes finite and normalised to
    [0, 1] (pixel boxes would score 0 and draw off the frame in silence), else one
    :class:`ArtifactError` naming the file's line (``csv``) or row (a prediction table).

    Column by column, a min and a max each (NaN fails both); the masks that find the line
    are built only for a file that fails (8.6M rows: 0.02 s, against 1.3 s for the
    comparisons of a stacked (N, 4) box array)."""
    score = np.asarray(df["score"], np.float64)                              # DataFrame or
    boxes = [np.asarray(df[c], np.float64) for c in ("x1", "y1", "x2", "y2")]  # dict of columns
    tol = 1e-6
    if not _within(score, 0.0, 1.0):
        row = int(np.argmax(~((score >= 0) & (score <= 1))))
        _fail(path, f"score must be in [0, 1] (a probability), got {score[row]}", row, csv)
    if not all(_within(c, -tol, 1 + tol) for c in boxes):
        bad = np.zeros(len(score), dtype=bool)                               # (N,)
        for c in boxes:
            bad |= ~((c >= -tol) & (c <= 1 + tol))
        row = int(np.argmax(bad))
        _fail(path, "box coordinates must be finite and normalised to [0, 1], "
                    f"got {[float(c[row]) for c in boxes]}", row, csv)


def _within(values: np.ndarray, lo: float, hi: float) -> bool:
    """Every value in [lo, hi] (False for NaN: min and max propagate it)."""
    return not len(values) or bool(values.min() >= lo and values.max() <= hi)


def _fail(path: str | os.PathLike, problem: str, row: int, csv: bool) -> None:
    """The one-line error of ``row``: its line in a CSV, its row number in a table."""
    if not csv:
        raise ArtifactError(path, f"row {row}: {problem}")
    raise ArtifactError(path, problem, line_of_row(path, row))


def table_path(csv_path: str | os.PathLike) -> Path:
    """The prediction table beside a predictions CSV: ``p.csv`` -> ``p.parquet`` (a name
    without ``.csv`` gets ``.parquet`` appended)."""
    p = Path(csv_path)
    return p.with_suffix(".parquet") if p.suffix == ".csv" else p.with_name(p.name + ".parquet")


def write_prediction_table(df: pd.DataFrame, path: str | os.PathLike, meta: dict) -> None:
    """Write the rows of ``df`` (:data:`COLUMNS`, and ``logit`` if it has one) as a
    prediction table, atomically, in their order; ``meta``: JSON-able, what wrote it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import atomic_path

    names = COLUMNS + (["logit"] if "logit" in df.columns else [])
    schema = pa.schema([(c, getattr(pa, TABLE_TYPES[c])()) for c in names])
    try:
        table = pa.Table.from_pandas(df[names], schema=schema, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as err:
        first = (str(err).splitlines() or [""])[0][:160]
        raise ArtifactError(path, f"not written: columns do not fit the prediction table "
                                  f"({err.__class__.__name__}: {first})") from None
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_prediction_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """A prediction table -> ``(rows, meta)``; the rows have ``logit`` only if the file does.
    A file that is not one (no Parquet, a missing or mistyped column, a non-finite logit)
    is one :class:`ArtifactError` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ArtifactError(path, "prediction table not found") from None
    except (pa.ArrowException, OSError) as err:
        raise ArtifactError(path, "not a readable Parquet prediction table "
                                  f"({(str(err).splitlines() or [''])[0][:120]})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ArtifactError(path, f"not a prediction table: no column {', '.join(missing)}")
    names = COLUMNS + (["logit"] if "logit" in table.column_names else [])
    for c in names:
        t = table.schema.field(c).type
        ok = (pa.types.is_string(t) or pa.types.is_large_string(t)
              or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))) \
            if c == "video_id" else pa.types.is_integer(t) if c in ("timestamp", "action_id") \
            else pa.types.is_floating(t)
        if not ok:
            raise ArtifactError(path, f"column '{c}' is {t}, expected {TABLE_TYPES[c]}")
        if table.column(c).null_count:
            raise ArtifactError(path, f"column '{c}' has {table.column(c).null_count} empty "
                                      "values")
    df = table.select(names).to_pandas()
    df["video_id"] = df["video_id"].astype(str)
    check_values(df, path, csv=False)
    if "logit" in df and not np.isfinite(df["logit"].to_numpy(np.float64)).all():
        row = int(np.argmin(np.isfinite(df["logit"].to_numpy(np.float64))))
        raise ArtifactError(path, f"row {row}: non-finite logit {df['logit'].iloc[row]}")
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        meta = {}
    return df, meta
