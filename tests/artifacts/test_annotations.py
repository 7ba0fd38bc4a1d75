import pandas as pd
import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import (
    read_annotations,
    read_excluded,
    write_annotations,
    write_excluded,
)
from tests.conftest import boxes_gt


def test_round_trip(tmp_path):
    df = boxes_gt({"v1": 3, "-x_Y9": 2})
    write_annotations(df, tmp_path / "gt.csv")
    back = read_annotations(tmp_path / "gt.csv")
    pd.testing.assert_frame_equal(back, df.astype(back.dtypes.to_dict()), atol=1e-3)


def test_timestamp_leading_zeros_are_the_same_second(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("vid,0902,0.1,0.1,0.5,0.5,12,0\nvid,902,0.1,0.1,0.5,0.5,11,0\n")
    df = read_annotations(p)
    assert df["timestamp"].tolist() == [902, 902]


def test_seven_columns_person_id_optional(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("vid,0902,0.1,0.1,0.5,0.5,12\n")
    assert read_annotations(p)["person_id"].tolist() == [-1]


@pytest.mark.parametrize("line, problem", [
    ("vid,0903,0.1,0.1,0.5,0.5,12,0,9", "expected 8 columns, got 9"),
    ("vid,0903,0.1,abc,0.5,0.5,12,0", "column 'y1' must be a number"),
    ("vid,902.5,0.1,0.1,0.5,0.5,12,0", "column 'timestamp' must be an integer"),
])
def test_malformed_row_names_file_and_line(tmp_path, line, problem):
    p = tmp_path / "gt.csv"
    p.write_text("vid,0902,0.1,0.1,0.5,0.5,12,0\n" + line + "\n")
    with pytest.raises(ArtifactError) as err:
        read_annotations(p)
    assert f"{p}:2:" in str(err.value) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_unnormalised_box_is_rejected(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("vid,0902,10,10,50,50,12,0\n")
    with pytest.raises(ArtifactError, match="normalised"):
        read_annotations(p)


def test_excluded_round_trip(tmp_path):
    df = pd.DataFrame({"video_id": ["a", "b"], "timestamp": [902, 1798]})
    write_excluded(df, tmp_path / "ex.csv")
    assert (tmp_path / "ex.csv").read_text() == "a,0902\nb,1798\n"
    pd.testing.assert_frame_equal(read_excluded(tmp_path / "ex.csv"), df)
    assert len(read_excluded(None)) == 0


def test_inverted_box_is_rejected_at_its_line(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("v,1,0.1,0.1,0.5,0.5,1,0\n\nv,2,0.6,0.1,0.5,0.5,1,0\n")
    with pytest.raises(ArtifactError, match=r"a.csv:3: inverted box"):
        read_annotations(p)
