"""Person detections: ``detections.parquet``, one row per person box.

Columns (exact names and types)::

    video_id: string, timestamp: int32 (seconds),
    x1, y1, x2, y2: float32 (normalised to [0, 1] of the original frame),
    score: float32

The detector's name, weights and thresholds are stored as JSON under the Parquet
key-value metadata key ``acar``.
"""

from __future__ import annotations

import json
import os

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


def write_detections(df: pd.DataFrame, path: str | os.PathLike, meta: dict) -> None:
    """Write ``df`` (columns :data:`COLUMNS`) sorted by video and time, atomically."""
    df = df[COLUMNS].sort_values(["video_id", "timestamp"], kind="stable").reset_index(drop=True)
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_detections(path: str | os.PathLike, min_score: float = 0.0
                    ) -> tuple[pd.DataFrame, dict]:
    """Return ``(rows with score >= min_score, detector metadata)``."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (pa.ArrowException, OSError) as err:
        raise ArtifactError(path, f"not a readable Parquet file ({err})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ArtifactError(path, f"missing detection columns {missing}")
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    df = table.select(COLUMNS).cast(SCHEMA).to_pandas()
    if min_score > 0:
        df = df[df["score"] >= min_score].reset_index(drop=True)
    return df, meta
