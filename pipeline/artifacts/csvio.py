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
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import ArtifactError

if TYPE_CHECKING:  # pandas is imported only where a DataFrame is built (scoring needs none)
    import pandas as pd

_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")

KIND_TO_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}


class Codes(NamedTuple):
    """A string column as integer codes into its distinct values: ``categories[codes]``.
    Codes number the values in order of first appearance."""

    codes: np.ndarray  # [rows] int
    categories: np.ndarray  # [distinct] object (str)

    def __len__(self) -> int:
        return len(self.codes)


def read_csv(path: str | os.PathLike, schema: dict[str, str], min_columns: int | None = None,
             *, categorical: bool = False) -> pd.DataFrame:
    """Read a header-less CSV whose columns are ``schema`` (name -> 'str'|'int'|'float').

    ``min_columns``: trailing columns may be missing (they become NaN/None); by default
    every column is required.  Integer columns must hold integers (``902.5`` is an error).
    Returns a DataFrame with int64 / float64 / object(str) columns; with ``categorical``,
    'str' columns are pandas Categoricals instead (much faster and smaller for big files).
    """
    table = _read(path, schema, min_columns, categorical)
    if isinstance(table, list):
        return _frame(table, schema, categorical)
    return table.to_pandas(split_blocks=True, self_destruct=True)


def read_columns(path: str | os.PathLike, schema: dict[str, str],
                 min_columns: int | None = None) -> dict[str, np.ndarray | Codes]:
    """As :func:`read_csv`, but without pandas: name -> numpy array (int64 / float64), and
    each 'str' column as :class:`Codes`.

    The scoring path of big files: Arrow's streaming reader (parsing ahead on its threads)
    fills numpy arrays batch by batch, so the peak memory is one copy of the data plus a few
    batches; Arrow's own conversions import pandas (~0.5 s), so its buffers are read
    directly."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "file not found")
    if _is_blank(path):
        return _columns([], schema)
    if min_columns is not None:
        return _columns(_diagnose(path, schema, min_columns), schema)
    try:
        return _stream_columns(path, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        # The slow pass names the first bad line; if it finds none (e.g. a line of blanks,
        # which it skips), its rows are the answer.
        return _columns(_diagnose(path, schema, len(schema)), schema)


def _stream_columns(path: Path, schema: dict[str, str]) -> dict[str, np.ndarray | Codes]:
    names = list(schema)
    dictionary = pa.dictionary(pa.int32(), pa.string())
    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(column_names=names, block_size=_BLOCK),
        convert_options=pacsv.ConvertOptions(
            column_types={n: dictionary if k == "str" else KIND_TO_ARROW[k]
                          for n, k in schema.items()},
            strings_can_be_null=False, null_values=[""]))
    size = path.stat().st_size
    cols: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, int]] = {n: {} for n, k in schema.items() if k == "str"}
    n = 0
    for batch in reader:
        rows = batch.num_rows
        if not cols:  # sized from the first batch's bytes per row, with a margin: pages
            # never written are never resident, so an over-estimate costs no memory
            per_row = max(1.0, min(size, _BLOCK) / max(rows, 1))  # a batch is a block
            cap = int(size / per_row * 1.25) + rows + 1024
            cols = {c: np.empty(cap, dtype=np.int32 if schema[c] == "str" else
                                _NUMPY[schema[c]]) for c in names}
        if n + rows > len(cols[names[0]]):
            cols = {c: _grow(v, 2 * (n + rows)) for c, v in cols.items()}
        for c, arr in zip(names, batch.columns, strict=True):
            if arr.null_count or (schema[c] == "str" and "" in _strings(arr.dictionary)):
                _diagnose(path, schema, len(names))  # raises at the line with the empty value
                raise ArtifactError(path, f"empty value in column '{c}'")  # pragma: no cover
            if schema[c] == "str":
                local = np.array([index[c].setdefault(v, len(index[c]))
                                  for v in _strings(arr.dictionary)], dtype=np.int32)
                vals = local[_values(arr.indices)] if len(local) else 0
            else:
                vals = _values(arr)
            cols[c][n:n + rows] = vals
        n += rows
    out: dict[str, np.ndarray | Codes] = {}
    for c in names:
        v = cols[c][:n] if cols else np.zeros(0, dtype=np.int32 if schema[c] == "str" else
                                               _NUMPY[schema[c]])
        out[c] = Codes(v, np.array(list(index[c]), dtype=object)) if schema[c] == "str" else v
    return out


def _grow(a: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, dtype=a.dtype)
    out[:len(a)] = a
    return out


_NUMPY = {"int": np.int64, "float": np.float64}
_BLOCK = 1 << 20  # bytes of CSV per streamed batch


def _values(arr: pa.Array) -> np.ndarray:
    """Zero-copy numpy view of a null-free fixed-width Arrow array."""
    kind = "float" if pa.types.is_floating(arr.type) else "int"  # the CSV's int64/float64
    dtype = np.dtype(f"{kind}{arr.type.bit_width}")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr),
                         offset=arr.offset * dtype.itemsize)


def _strings(arr: pa.Array) -> list[str]:
    """The values of a null-free Arrow string array."""
    _, offsets, data = arr.buffers()
    off = np.frombuffer(offsets, dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    raw = memoryview(data) if data is not None else memoryview(b"")
    return [bytes(raw[i:j]).decode() for i, j in zip(off[:-1].tolist(), off[1:].tolist(),
                                                     strict=True)]


def _read(path: str | os.PathLike, schema: dict[str, str], min_columns: int | None,
          categorical: bool) -> pa.Table | list[list]:
    """The file as an Arrow table (fast path), or as the slow pass's rows."""
    path = Path(path)
    names = list(schema)
    if not path.is_file():
        raise ArtifactError(path, "file not found")
    if _is_blank(path):
        return []
    if min_columns is not None:
        return _diagnose(path, schema, min_columns)
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
        return _diagnose(path, schema, len(names))
    empty = [n for n, col in zip(names, table.columns, strict=True)
             if col.null_count or (schema[n] == "str" and _has_empty_string(col))]
    if empty:
        _diagnose(path, schema, len(names))  # raises at the line with the empty value
        raise ArtifactError(path, f"empty value in column '{empty[0]}'")  # pragma: no cover
    return table


def _columns(rows: list[list], schema: dict[str, str]) -> dict[str, np.ndarray | Codes]:
    """The slow pass's rows as :func:`read_columns` returns them."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    out: dict[str, np.ndarray | Codes] = {}
    for (name, kind), values in zip(schema.items(), cols, strict=True):
        if kind == "str":
            index: dict = {}
            codes = np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)
            out[name] = Codes(codes, np.array(list(index), dtype=object))
        elif kind == "int" and not any(isinstance(v, float) for v in values):
            out[name] = np.array(values, dtype=np.int64)
        else:  # float, or an optional int column with missing values (NaN)
            out[name] = np.array(values, dtype=np.float64)
    return out


def _has_empty_string(col: pa.ChunkedArray) -> bool:
    if pa.types.is_dictionary(col.type):  # CSV dictionaries only hold values that occur
        return any(len(c) and "" in _strings(c.dictionary) for c in col.chunks)
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
    import pandas as pd

    dtypes = {"str": "category" if categorical else object, "int": np.int64,
              "float": np.float64}
    return pd.DataFrame({n: pd.Series([], dtype=dtypes[k]) for n, k in schema.items()})


def _frame(rows: list[list], schema: dict[str, str], categorical: bool = False
           ) -> pd.DataFrame:
    import pandas as pd

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
