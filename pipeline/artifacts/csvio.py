"""Fast, strict reading of header-less AVA-style CSV files.

The fast path is pyarrow's multi-threaded CSV reader with fixed column types.  If it
rejects the file, a slow pass with the standard ``csv`` module finds the first bad
line so that the error names the file, the line number and the problem.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from . import ArtifactError

_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")

KIND_TO_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}


def read_csv(path: str | os.PathLike, schema: dict[str, str], min_columns: int | None = None,
             *, categorical: bool = False) -> pd.DataFrame:
    """Read a header-less CSV whose columns are ``schema`` (name -> 'str'|'int'|'float').

    ``min_columns``: trailing columns may be missing (they become NaN/None); by default
    every column is required.  Integer columns must hold integers (``902.5`` is an error).
    Returns a DataFrame with int64 / float64 / object(str) columns; with ``categorical``,
    'str' columns are pandas Categoricals instead (much faster and smaller for big files).
    """
    path = Path(path)
    names = list(schema)
    if not path.is_file():
        raise ArtifactError(path, "file not found")
    if _is_blank(path):
        return _empty(schema, categorical)
    if min_columns is not None:
        return _frame(_diagnose(path, schema, min_columns), schema, categorical)
    str_type = pa.dictionary(pa.int32(), pa.string()) if categorical else pa.string()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(),
            convert_options=pacsv.ConvertOptions(
                column_types={n: str_type if k == "str" else KIND_TO_ARROW[k]
                              for n, k in schema.items()},
                strings_can_be_null=False, null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        # The slow pass names the first bad line; if it finds none (e.g. a line of blanks,
        # which it skips), its rows are the answer.
        return _frame(_diagnose(path, schema, len(names)), schema, categorical)
    empty = [n for n, col in zip(names, table.columns, strict=True)
             if col.null_count or (schema[n] == "str" and _has_empty_string(col))]
    if empty:
        _diagnose(path, schema, len(names))  # raises at the line with the empty value
        raise ArtifactError(path, f"empty value in column '{empty[0]}'")  # pragma: no cover
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _has_empty_string(col: pa.ChunkedArray) -> bool:
    if pa.types.is_dictionary(col.type):  # CSV dictionaries only hold values that occur
        return any(len(c) and "" in c.dictionary.to_pylist() for c in col.chunks)
    import pyarrow.compute as pc  # imported lazily: it costs ~0.2 s at start-up

    return bool(pc.any(pc.equal(pc.utf8_length(col), 0)).as_py())


def line_of_row(path: str | os.PathLike, row: int) -> int:
    """1-based line number of data row ``row`` (0-based) of a CSV read by :func:`read_csv`,
    which skips blank lines; used to point error messages at the right line."""
    with open(path, "rb") as fh:
        seen = -1
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return row + 1


def _is_blank(path: Path, chunk: int = 1 << 16) -> bool:
    """True if the file holds nothing but whitespace (reads only as far as needed)."""
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if block.strip():
                return False
    return True


def _empty(schema: dict[str, str], categorical: bool = False) -> pd.DataFrame:
    dtypes = {"str": "category" if categorical else object, "int": np.int64,
              "float": np.float64}
    return pd.DataFrame({n: pd.Series([], dtype=dtypes[k]) for n, k in schema.items()})


def _frame(rows: list[list], schema: dict[str, str], categorical: bool = False
           ) -> pd.DataFrame:
    if not rows:
        return _empty(schema, categorical)
    cols = list(zip(*rows, strict=True))
    out = {}
    for (name, kind), values in zip(schema.items(), cols, strict=True):
        if kind == "str":
            out[name] = pd.Series(values, dtype="category" if categorical else object)
        elif kind == "int":  # float64 when an optional trailing column is missing (NaN)
            missing = any(isinstance(v, float) for v in values)
            out[name] = pd.Series(values, dtype=np.float64 if missing else np.int64)
        else:
            out[name] = pd.Series(values, dtype=np.float64)
    return pd.DataFrame(out)


def _diagnose(path: Path, schema: dict[str, str], min_columns: int) -> list[list]:
    """Slow, line-by-line parse; raises ArtifactError at the first bad line."""
    names, kinds = list(schema), list(schema.values())
    rows: list[list] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # the fast path skips a BOM
            for lineno, fields in enumerate(csv.reader(fh), start=1):
                if not fields or all(not f.strip() for f in fields):
                    continue
                if not (min_columns <= len(fields) <= len(names)):
                    raise ArtifactError(
                        path, f"expected {len(names)} columns, got {len(fields)}", lineno)
                row: list = []
                for name, kind, field in zip(names, kinds, fields + [""] * len(names),
                                             strict=False):
                    row.append(_convert(path, lineno, name, kind, field,
                                        required=len(row) < min_columns))
                rows.append(row)
    except UnicodeDecodeError as err:
        raise ArtifactError(path, f"not a text CSV file ({err.reason})") from None
    return rows


def _convert(path: Path, lineno: int, name: str, kind: str, field: str, required: bool):
    field = field.strip()
    if not field:
        if required:
            raise ArtifactError(path, f"empty value in column '{name}'", lineno)
        return None if kind == "str" else np.nan
    if kind == "str":
        return field
    if kind == "int":
        if not _INT_RE.match(field):
            raise ArtifactError(path, f"column '{name}' must be an integer, got '{field}'", lineno)
        return int(field)
    try:
        return float(field)
    except ValueError:
        raise ArtifactError(path, f"column '{name}' must be a number, got '{field}'",
                            lineno) from None


def write_csv(df: pd.DataFrame, path: str | os.PathLike, columns: list[str],
              float_format: str = "%.6f", int_widths: dict[str, int] | None = None) -> None:
    """Write ``df[columns]`` header-less, atomically."""
    from .atomic import atomic_path

    out = df[columns].copy()
    for name, width in (int_widths or {}).items():
        out[name] = out[name].astype(np.int64).map(lambda v, w=width: f"{v:0{w}d}")
    with atomic_path(path) as tmp:
        out.to_csv(tmp, header=False, index=False, float_format=float_format)
