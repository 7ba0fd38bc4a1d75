"""train --val-excluded (issue 20 item 10): the logged val mAP is scored as
``eval --excluded`` scores the same model, and train names its softmax classes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline import evaluate, train
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations, write_excluded
from tests.conftest import boxes_gt


def test_logged_val_map_equals_eval_with_the_same_excluded_file(
        tmp_path, feature_store, detections_file, labelmap_file, capsys):
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    ex = tmp_path / "excluded.csv"
    write_excluded(pd.DataFrame({"video_id": ["vid_a", "vid_b"], "timestamp": [2, 1]}), ex)
    cfg = train.TrainConfig(epochs=2, batch_size=3, lr=0.05, warmup_epochs=0)
    row = train.run(cfg, feature_store, detections_file, gt, labelmap_file, tmp_path / "m.pt",
                    val_annotations=gt, val_excluded=ex)
    out = capsys.readouterr().out.splitlines()
    assert "train: pose softmax over 2 classes (stand, sit); a sigmoid for each of the " \
           "other 2" in out
    scored = {}
    for name, excluded in (("with", ex), ("without", None)):
        evaluate.run(evaluate.EvalConfig(), tmp_path / "m.pt", feature_store, detections_file,
                     gt, labelmap_file, tmp_path / f"{name}.json", excluded=excluded)
        scored[name] = json.loads((tmp_path / f"{name}.json").read_text())["mAP"]
    assert scored["with"] != pytest.approx(scored["without"], abs=1e-3)  # the file matters
    assert row["val_mAP"] == pytest.approx(scored["with"], abs=1e-6)
    log = pd.read_csv(tmp_path / "m.pt.log.csv")
    assert log["val_mAP"].iloc[-1] == pytest.approx(scored["with"], abs=1e-6)
    # the end summary
    assert out[-1] == (f"train: linear, 2 epochs, final loss {row['loss']:.4f}, val mAP "
                       f"{row['val_mAP']:.4f} -> {tmp_path / 'm.pt'} (log {tmp_path}/m.pt.log.csv)")


def test_val_excluded_needs_val_annotations(tmp_path, feature_store, detections_file,
                                            labelmap_file):
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4}), gt)
    ex = tmp_path / "excluded.csv"
    write_excluded(pd.DataFrame({"video_id": ["vid_a"], "timestamp": [2]}), ex)
    with pytest.raises(ArtifactError, match="excluded.csv: --val-excluded .* --val-annotations"):
        train.run(train.TrainConfig(epochs=1), feature_store, detections_file, gt,
                  labelmap_file, tmp_path / "m.pt", val_excluded=ex)
    assert not (tmp_path / "m.pt").exists()
