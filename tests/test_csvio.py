"""csvio: the fast reader's results, and its errors naming the file, line and problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import read_annotations
from pipeline.artifacts.csvio import line_of_row, read_csv
from pipeline.artifacts.predictions import SCHEMA, read_predictions

ROW = "abc,0902,0.1,0.2,0.3,0.4,12,0.75\n"


def _write(tmp_path, text, name="p.csv", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("categorical", [False, True])
def test_fast_path_types_and_values(tmp_path, categorical):
    path = _write(tmp_path, ROW + "de,903,1,0,1e-1,0.5,3,1\n")
    df = read_csv(path, SCHEMA, categorical=categorical)
    assert list(df.columns) == list(SCHEMA)
    assert df["timestamp"].tolist() == [902, 903]
    assert df["timestamp"].dtype == np.int64 and df["action_id"].dtype == np.int64
    assert df["x2"].tolist() == [0.3, 0.1] and df["score"].dtype == np.float64
    assert df["video_id"].tolist() == ["abc", "de"]
    assert isinstance(df["video_id"].dtype, pd.CategoricalDtype) == categorical


def test_crlf_and_blank_lines(tmp_path):
    path = _write(tmp_path, ROW.replace("\n", "\r\n") + "\r\n\r\n" + ROW.replace("\n", "\r\n"))
    assert len(read_predictions(path)) == 2


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
@pytest.mark.parametrize("categorical", [False, True])
def test_blank_file_is_empty(tmp_path, text, categorical):
    df = read_predictions(_write(tmp_path, text), categorical=categorical)
    assert len(df) == 0 and list(df.columns) == list(SCHEMA)
    assert df["score"].dtype == np.float64 and df["timestamp"].dtype == np.int64


def test_line_of_blanks_in_the_middle_is_skipped(tmp_path):
    df = read_predictions(_write(tmp_path, ROW + "   \n" + ROW))
    assert len(df) == 2 and df["timestamp"].tolist() == [902, 902]


@pytest.mark.parametrize("bad, problem", [
    ("abc,0902,0.1,0.2,0.3,0.4,12\n", "expected 8 columns, got 7"),
    ("abc,0902,0.1,0.2,0.3,0.4,12,0.5,9\n", "expected 8 columns, got 9"),
    ("abc,0902,0.1,x,0.3,0.4,12,0.5\n", "column 'y1' must be a number, got 'x'"),
    ("abc,902.5,0.1,0.2,0.3,0.4,12,0.5\n", "column 'timestamp' must be an integer, got '902.5'"),
    ("abc,0902,0.1,0.2,0.3,0.4,1.5,0.5\n", "column 'action_id' must be an integer, got '1.5'"),
    ("abc,0902,0.1,,0.3,0.4,12,0.5\n", "empty value in column 'y1'"),
    (",0902,0.1,0.2,0.3,0.4,12,0.5\n", "empty value in column 'video_id'"),
])
def test_errors_name_file_line_and_problem(tmp_path, bad, problem):
    path = _write(tmp_path, ROW + "\n" + ROW + bad + ROW)  # the bad row is on line 4
    for categorical in (False, True):
        with pytest.raises(ArtifactError) as err:
            read_csv(path, SCHEMA, categorical=categorical)
        assert str(err.value) == f"{path}:4: {problem}"
        assert err.value.line == 4 and err.value.path == path


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ArtifactError, match="file not found"):
        read_predictions(tmp_path / "nope.csv")
    with pytest.raises(ArtifactError, match="not a text CSV file"):
        read_predictions(_write(tmp_path, b"\xff\xfe\xfa,\x00\n", mode="wb"))


def test_annotations_with_and_without_person_id(tmp_path):
    eight = read_annotations(_write(tmp_path, "v,0902,0.1,0.2,0.3,0.4,12,3\n", "a.csv"))
    seven = read_annotations(_write(tmp_path, "v,0902,0.1,0.2,0.3,0.4,12\n", "b.csv"))
    assert eight["person_id"].tolist() == [3] and seven["person_id"].tolist() == [-1]
    assert seven["timestamp"].tolist() == [902]


def test_line_of_row(tmp_path):
    path = _write(tmp_path, "\n" + ROW + "  \n" + ROW)
    assert [line_of_row(path, r) for r in (0, 1)] == [2, 4]


@pytest.mark.parametrize("text", [
    "val_000,0902,0.1,0.2,0.3,0.4,12\nval_001,0903,0.1,0.2,0.3,0.4,3\n",     # 7 columns
    "val_000,0902,0.1,0.2,0.3,0.4,12,0\n \nval_001,0903,0.1,0.2,0.3,0.4,3,1\n",  # line of blanks
    "val_000,0902,0.1,0.2,0.3,0.4,12,0\nval_001,0903,0.1,0.2,0.3,0.4,3,1\n",    # fast path
])
def test_utf8_bom_does_not_reach_the_first_video_id(tmp_path, text):
    """issue 19 item 5: the slow path read a BOM into the first id ('\\ufeffval_000')."""
    path = _write(tmp_path, b"\xef\xbb\xbf" + text.encode(), mode="wb")
    assert read_annotations(path)["video_id"].tolist() == ["val_000", "val_001"]


def test_utf8_bom_in_a_bad_file_still_names_the_right_line(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbfa,1,0.1,0.2,0.3,0.4,1\nb,x,0.1,0.2,0.3,0.4,1\n",
                  mode="wb")
    with pytest.raises(ArtifactError, match=r"p.csv:2: column 'timestamp' must be an integer"):
        read_annotations(path)
