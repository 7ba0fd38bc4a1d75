import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.detections import SCHEMA, read_detections, write_detections


def test_round_trip_types_and_metadata(tmp_path):
    df = pd.DataFrame({"video_id": ["b", "a", "a"], "timestamp": [3, 902, 1],
                       "x1": [0.1, 0.2, 0.3], "y1": [0.1, 0.2, 0.3], "x2": [0.5, 0.6, 0.7],
                       "y2": [0.5, 0.6, 0.7], "score": [0.5, 0.95, 0.2]})
    meta = {"detector": "yolo11n.pt", "min_score": 0.1, "classes": [0]}
    write_detections(df, tmp_path / "d.parquet", meta)
    assert pq.read_schema(tmp_path / "d.parquet").remove_metadata() == SCHEMA
    back, meta_back = read_detections(tmp_path / "d.parquet")
    assert meta_back == meta
    expect = df.sort_values(["video_id", "timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expect.astype(back.dtypes.to_dict()))
    high, _ = read_detections(tmp_path / "d.parquet", min_score=0.9)
    assert high["timestamp"].tolist() == [902]


def test_not_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    p.write_text("hello")
    with pytest.raises(ArtifactError, match="not a readable Parquet"):
        read_detections(p)


def _rows(**change) -> pd.DataFrame:
    df = pd.DataFrame({"video_id": ["a", "a", "b"], "timestamp": [1, 2, 1],
                       "x1": [0.1, 0.2, 0.3], "y1": [0.1, 0.2, 0.3], "x2": [0.5, 0.6, 0.7],
                       "y2": [0.5, 0.6, 0.7], "score": [0.5, 0.95, 0.2]})
    for col, value in change.items():
        df[col] = df[col].astype(object)
        df.loc[2, col] = value
    return df


# issue 19 item 8: each of these reached roi_align, gave an ArrowInvalid traceback or
# passed in silence
BAD_VALUES = [
    ({"x1": float("nan")}, r"row 2 \(b, t=1\): non-finite box \(nan, 0.3, 0.7, 0.7\)"),
    ({"y2": float("inf")}, "non-finite box"),
    ({"x2": 1.5}, r"box \(0.3, 0.3, 1.5, 0.7\) is not normalised to \[0, 1\]"),
    ({"y1": -0.2}, "is not normalised"),
    ({"x1": 0.9}, r"row 2 \(b, t=1\): inverted box: x1 0.9 > x2 0.7"),
    ({"y1": 0.8}, "inverted box: y1 0.8 > y2 0.7"),
    ({"score": float("nan")}, "non-finite score nan"),
    ({"video_id": ""}, "empty video_id"),
]


@pytest.mark.parametrize("change, problem", BAD_VALUES)
def test_bad_values_are_refused_on_write(tmp_path, change, problem):
    out = tmp_path / "d.parquet"
    with pytest.raises(ArtifactError, match=rf"d.parquet: not written: .*{problem}"):
        write_detections(_rows(**change), out, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, problem", BAD_VALUES)
def test_bad_values_are_refused_on_read(tmp_path, change, problem):
    out = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(_rows(**change), schema=SCHEMA, preserve_index=False),
                   out)
    with pytest.raises(ArtifactError, match=rf"d.parquet: .*{problem}"):
        read_detections(out)


@pytest.mark.parametrize("column, values, problem", [
    ("timestamp", [1.5, 2.0, 1.0], "column 'timestamp' is double, expected integer seconds"),
    ("timestamp", ["1", "2", "1"], "'timestamp' is (large_)?string, expected integer seconds"),
    ("x1", ["0.1", "0.2", "0.3"], "column 'x1' is (large_)?string, expected a number"),
    ("video_id", [1, 2, 3], "column 'video_id' is int64, expected a string"),
    ("timestamp", [1, 2, 2**40], "columns do not fit the detections schema"),
])
def test_wrong_column_types_are_one_line_errors(tmp_path, column, values, problem):
    out = tmp_path / "d.parquet"
    df = _rows()
    df[column] = values
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out)
    with pytest.raises(ArtifactError, match=problem) as err:
        read_detections(out)
    assert "\n" not in str(err.value)
    with pytest.raises(ArtifactError, match="d2.parquet: not written: ") as err:
        write_detections(df, tmp_path / "d2.parquet", {})
    assert "\n" not in str(err.value) and not (tmp_path / "d2.parquet").exists()


def test_empty_table_is_refused_only_when_asked(tmp_path):
    empty = _rows().iloc[:0]
    out = tmp_path / "d.parquet"
    with pytest.raises(ArtifactError, match="d.parquet: not written: no detections"):
        write_detections(empty, out, {}, allow_empty=False)
    assert not out.exists()
    write_detections(empty, out, {})
    assert len(read_detections(out)[0]) == 0
    with pytest.raises(ArtifactError, match="d.parquet: no detections .*--allow-empty"):
        read_detections(out, allow_empty=False)


def test_boundary_values_pass(tmp_path):
    df = _rows(x1=0.0, x2=1.0, y1=0.7)     # zero-height box and the range's ends
    write_detections(df, tmp_path / "d.parquet", {})
    assert len(read_detections(tmp_path / "d.parquet")[0]) == 3
