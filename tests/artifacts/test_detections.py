import pandas as pd
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
