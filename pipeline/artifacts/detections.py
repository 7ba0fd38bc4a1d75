"""Person detections: ``detections.parquet``, one row per person box.

Columns (exact names and types)::

    video_id: string, timestamp: int32 (seconds),
    x1, y1, x2, y2: float32 (normalised to [0, 1] of the original frame),
    score: float32

The detector's name, weights and thresholds are stored as JSON under the Parquet
key-value metadata key ``acar``.

The contract is checked on write and on read (:func:`check_detections`): a non-empty
``video_id``, integer timestamps, finite coordinates inside [0, 1] with ``x1 <= x2`` and
``y1 <= y2``, finite scores.  A table without a row is refused unless ``allow_empty``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import ArtifactError
from .atomic import atomic_path

SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("timestamp", pa.int32()),
    ("x1", pa.float32()),
    ("y1", pa.float32()),
    ("x2", pa.float32()),
    ("y2", pa.float32()),
    ("score", pa.float32()),
])
COLUMNS = SCHEMA.names
META_KEY = b"acar"
BOX = ["x1", "y1", "x2", "y2"]
EPS = 1e-6          # rounding slack on the [0, 1] range (as the CSV readers allow)


def check_detections(df: pd.DataFrame, path: str | os.PathLike, allow_empty: bool = True,
                     what: str = "") -> None:
    """Raise an ArtifactError naming ``path`` and the first row that breaks the contract.

    ``df`` has the columns :data:`COLUMNS` with numeric coordinates and scores."""
    if len(df) == 0:
        if not allow_empty:
            raise ArtifactError(path, f"{what}no detections (an empty table; pass "
                                "--allow-empty if that is what you want)")
        return
    vid = df["video_id"]
    bad_id = vid.isna().to_numpy() | (vid.astype(str).str.strip() == "").to_numpy()
    boxes = df[BOX].to_numpy(np.float64)
    score = df["score"].to_numpy(np.float64)
    checks = [
        (bad_id, lambda i: "empty video_id"),
        (~np.isfinite(boxes).all(axis=1), lambda i: f"non-finite box {_box(boxes[i])}"),
        (((boxes < -EPS) | (boxes > 1 + EPS)).any(axis=1),
         lambda i: f"box {_box(boxes[i])} is not normalised to [0, 1]"),
        (boxes[:, 0] > boxes[:, 2] + EPS,
         lambda i: f"inverted box: x1 {boxes[i, 0]:g} > x2 {boxes[i, 2]:g}"),
        (boxes[:, 1] > boxes[:, 3] + EPS,
         lambda i: f"inverted box: y1 {boxes[i, 1]:g} > y2 {boxes[i, 3]:g}"),
        (~np.isfinite(score), lambda i: f"non-finite score {score[i]}"),
    ]
    for bad, problem in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = f"row {i} ({vid.iloc[i]!s}, t={df['timestamp'].iloc[i]})"
            raise ArtifactError(path, f"{what}{where}: {problem(i)}")


def _box(b: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:g}" for x in b) + ")"


def _check_types(table: pa.Table, path: str | os.PathLike) -> None:
    """Column types that can be cast to :data:`SCHEMA` without guessing."""
    for f in SCHEMA:
        t = table.schema.field(f.name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        ok = (pa.types.is_string(t) or pa.types.is_large_string(t)) if f.name == "video_id" \
            else pa.types.is_integer(t) if f.name == "timestamp" \
            else pa.types.is_floating(t) or pa.types.is_integer(t)
        if not ok:
            want = {"video_id": "a string", "timestamp": "integer seconds"}.get(f.name, "a number")
            raise ArtifactError(path, f"column '{f.name}' is {t}, expected {want}")


def write_detections(df: pd.DataFrame, path: str | os.PathLike, meta: dict,
                     allow_empty: bool = True) -> None:
    """Write ``df`` (columns :data:`COLUMNS`) sorted by video and time, atomically.

    Rows that break the contract (:func:`check_detections`) are an ArtifactError and
    nothing is written."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ArtifactError(path, f"not written: missing detection columns {missing}")
    for name in COLUMNS[1:]:       # arrow would parse strings of digits silently
        col = df[name]
        if not pd.api.types.is_numeric_dtype(col) and col.map(
                lambda v: isinstance(v, (str, bytes))).any():
            want = "integer seconds" if name == "timestamp" else "numbers"
            raise ArtifactError(path, f"not written: column '{name}' holds strings, "
                                f"expected {want}")
    df = df[COLUMNS].sort_values(["video_id", "timestamp"], kind="stable").reset_index(drop=True)
    try:
        table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as err:
        first = (str(err).splitlines() or [""])[0][:160]
        raise ArtifactError(path, f"not written: columns do not fit the detections schema "
                            f"({err.__class__.__name__}: {first})") from None
    check_detections(table.to_pandas(), path, allow_empty, what="not written: ")
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_detections(path: str | os.PathLike, min_score: float = 0.0, allow_empty: bool = True
                    ) -> tuple[pd.DataFrame, dict]:
    """Return ``(rows with score >= min_score, detector metadata)``.

    The whole table is checked against the contract first (:func:`check_detections`)."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (pa.ArrowException, OSError) as err:
        raise ArtifactError(path, f"not a readable Parquet file ({err})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ArtifactError(path, f"missing detection columns {missing}")
    try:
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(path, "the 'acar' metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise ArtifactError(path, "the 'acar' metadata is not a JSON object")
    table = table.select(COLUMNS)
    _check_types(table, path)
    try:
        table = table.cast(SCHEMA)
    except pa.ArrowException as err:
        first = (str(err).splitlines() or [""])[0][:160]
        raise ArtifactError(path, f"columns do not fit the detections schema ({first})") from None
    df = table.to_pandas()
    check_detections(df, path, allow_empty)
    if min_score > 0:
        df = df[df["score"] >= min_score].reset_index(drop=True)
    return df, meta
