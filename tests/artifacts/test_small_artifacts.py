import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.atomic import atomic_path
from pipeline.artifacts.checkpoint import load_checkpoint, save_checkpoint
from pipeline.artifacts.metrics import (
    per_class_path,
    read_eval,
    read_metrics,
    read_per_class,
    write_metrics,
)
from pipeline.artifacts.predictions import read_predictions, write_predictions


def test_predictions_round_trip(tmp_path):
    df = pd.DataFrame({"video_id": ["a", "b"], "timestamp": [902, 3], "x1": [0.1, 0.2],
                       "y1": [0.1, 0.2], "x2": [0.5, 0.6], "y2": [0.5, 0.6],
                       "action_id": [12, 80], "score": [0.123456, 0.9]})
    write_predictions(df, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0].startswith("a,0902,0.1,")
    pd.testing.assert_frame_equal(read_predictions(tmp_path / "p.csv"), df)


def test_metrics_round_trip_nan_is_null(tmp_path):
    m = {"mAP": 0.5, "per_class": {"1": {"name": "x", "ap": float("nan"), "num_gt": 0}},
         "per_superclass": {"pose": 0.5}}
    write_metrics(m, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"mAP": 0.5,
                                                             "per_superclass": {"pose": 0.5}}
    assert json.loads((tmp_path / "m.per_class.json").read_text())["1"]["ap"] is None
    assert read_metrics(tmp_path / "m.json")["mAP"] == 0.5
    assert read_eval(tmp_path / "m.json")["per_class"] == {
        "1": {"name": "x", "ap": None, "num_gt": 0}}


def test_metrics_json_is_the_summary_and_per_class_json_the_classes(tmp_path):
    per_class = {str(a): {"name": f"c{a}", "ap": 0.5, "num_gt": 3} for a in range(1, 61)}
    m = {"mAP": 0.5, "per_class": per_class, "per_superclass": {"pose": 0.4, "person": None},
         "keyframes": 7, "boxes": 12}
    write_metrics(m, tmp_path / "eval" / "metrics.json")
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(summary) == ["mAP", "per_superclass", "keyframes", "boxes"]   # 60 classes: 5
    where = per_class_path(tmp_path / "eval" / "metrics.json")
    assert where == tmp_path / "eval" / "per_class.json"
    assert per_class_path("x/acar_metrics.json").as_posix() == "x/acar_per_class.json"
    assert read_per_class(tmp_path / "eval" / "per_class.json") == per_class
    assert read_eval(tmp_path / "eval" / "metrics.json") == m
    (tmp_path / "bad.json").write_text('{"mAP": 0.5, "per_superclass": {}, "boxes": -1}')
    with pytest.raises(ArtifactError, match=r"bad\.json: 'boxes' must be a non-negative"):
        read_metrics(tmp_path / "bad.json")
    (tmp_path / "bad.per_class.json").write_text('{"1": {"name": "x", "ap": "high"}}')
    with pytest.raises(ArtifactError, match=r"bad\.per_class\.json: class '1' must be"):
        read_per_class(tmp_path / "bad.per_class.json")


def test_checkpoint_round_trip(tmp_path):
    lin = torch.nn.Linear(3, 2)
    ckpt = {"head": "linear", "hparams": {"dropout": 0.1}, "in_channels": 3, "num_classes": 2,
            "labelmap": {"ids": [1, 2], "names": ["a", "b"], "superclasses": ["", ""]},
            "feature_spec": {"backbone": "x"}, "state_dict": lin.state_dict()}
    save_checkpoint(ckpt, tmp_path / "m.pt")
    back = load_checkpoint(tmp_path / "m.pt")
    assert back["hparams"] == {"dropout": 0.1}
    torch.testing.assert_close(back["state_dict"]["weight"], lin.weight.detach())
    with pytest.raises(ValueError, match="missing"):
        save_checkpoint({"head": "x"}, tmp_path / "bad.pt")


def test_bad_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_text("nope")
    with pytest.raises(ArtifactError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert np.isfinite(1.0)


def test_a_checkpoint_saved_twice_has_the_same_bytes(tmp_path):
    """The file's bytes are a function of its content (DVC hashes them): not of the
    temporary file's random name, which torch.save would put in the archive."""
    import torch

    from pipeline.artifacts.checkpoint import load_checkpoint, save_checkpoint

    ckpt = {"head": "linear", "hparams": {}, "in_channels": 4, "num_classes": 2,
            "labelmap": {}, "feature_spec": {}, "state_dict": {"w": torch.arange(6.0)}}
    save_checkpoint(ckpt, tmp_path / "a.pt")
    save_checkpoint(ckpt, tmp_path / "sub" / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["state_dict"]["w"], torch.arange(6.0))
