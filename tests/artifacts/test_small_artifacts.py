import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.atomic import atomic_path
from pipeline.artifacts.checkpoint import load_checkpoint, save_checkpoint
from pipeline.artifacts.metrics import read_metrics, write_metrics
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
    assert json.loads((tmp_path / "m.json").read_text())["per_class"]["1"]["ap"] is None
    assert read_metrics(tmp_path / "m.json")["mAP"] == 0.5


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
