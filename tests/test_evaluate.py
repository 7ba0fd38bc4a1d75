import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import evaluate, train
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.artifacts.features import FeatureStore
from pipeline.artifacts.metrics import read_eval, read_metrics
from pipeline.artifacts.predictions import read_predictions
from pipeline.keyframes import FeatureCache, Keyframe, batch
from pipeline.models import build_head
from tests.conftest import LABELMAP, ROOT, boxes_gt, make_feature_store


def test_flipped_view_rois_mirror_the_box(tmp_path):
    store = make_feature_store(str(tmp_path / "f.zarr"), {"v": 1}, flip=True)
    kf = Keyframe("v", 1, 0, np.array([[0.1, 0.2, 0.3, 0.9]], np.float32))
    _, rois, _ = batch([kf], FeatureCache(store, "s36"))
    _, rois_f, _ = batch([kf], FeatureCache(store, "s36_flip"))
    # 48 px wide input, 8 px per cell: x in [4.8, 14.4] -> flipped [33.6, 43.2] -> cells / 8
    np.testing.assert_allclose(rois[0].numpy(), [0, 0.6, 0.9, 1.8, 4.05], atol=1e-5)
    np.testing.assert_allclose(rois_f[0].numpy(), [0, 4.2, 0.9, 5.4, 4.05], atol=1e-5)


def test_tta_flip_view_gives_same_logits_for_flip_symmetric_head(tmp_path):
    """The flipped store holds mirrored maps: a linear head sees the same actor."""
    store = make_feature_store(str(tmp_path / "f.zarr"), {"v": 2}, flip=True)
    head = build_head("linear", 8, 4)
    kf = Keyframe("v", 1, 0, np.array([[0.1, 0.2, 0.3, 0.9]], np.float32))
    ctx, rois, valid = batch([kf], FeatureCache(store, "s36"))
    a = head(ctx, rois, valid=valid)
    ctx, rois, valid = batch([kf], FeatureCache(store, "s36_flip"))
    b = head(ctx, rois, valid=valid)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


def test_eval_writes_predictions_and_metrics(tmp_path, feature_store, detections_file,
                                              labelmap_file):
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    cfg = train.TrainConfig(epochs=2, batch_size=4)
    train.run(cfg, feature_store, detections_file, gt, labelmap_file, tmp_path / "m.pt")
    metrics = evaluate.run(evaluate.EvalConfig(), tmp_path / "m.pt", feature_store,
                           detections_file, gt, labelmap_file, tmp_path / "e" / "metrics.json",
                           tmp_path / "e" / "pred.csv")
    pred = read_predictions(tmp_path / "e" / "pred.csv")
    assert len(pred) == 7 * 2 * LABELMAP.num_classes     # keyframes x boxes x classes
    assert set(pred["action_id"]) == set(LABELMAP.ids)
    assert pred["score"].between(0, 1).all()
    pose = pred[pred.action_id.isin([1, 2])].groupby(["video_id", "timestamp", "x1"])["score"]
    np.testing.assert_allclose(pose.sum().to_numpy(), 1.0, atol=1e-4)
    on_disk = read_metrics(tmp_path / "e" / "metrics.json")
    assert on_disk["mAP"] == metrics["mAP"] and 0 <= metrics["mAP"] <= 1
    assert set(on_disk) == {"mAP", "per_superclass", "keyframes", "boxes"}
    assert on_disk["keyframes"] == 7 and on_disk["boxes"] == 14     # 2 persons a keyframe
    assert read_eval(tmp_path / "e" / "metrics.json")["per_class"] == metrics["per_class"]
    assert set(on_disk["per_superclass"]) == {"pose", "person", "object"}
    assert load_checkpoint(tmp_path / "m.pt")["feature_spec"]["train_view"] == "s36"
    assert FeatureStore(feature_store).videos() == ["vid_a", "vid_b"]
    assert isinstance(pred, pd.DataFrame)


def test_sharded_inference_merges_to_the_unsharded_predictions(tmp_path, detections_file,
                                                                labelmap_file):
    videos = {f"v{i}": 3 for i in range(5)}
    fs = str(tmp_path / "f.zarr")
    make_feature_store(fs, videos)
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt(videos), gt)
    from pipeline.artifacts.detections import write_detections
    det = tmp_path / "d.parquet"
    write_detections(boxes_gt(videos)[["video_id", "timestamp", "x1", "y1", "x2", "y2"]]
                     .drop_duplicates().assign(score=0.9), det, {})
    train.run(train.TrainConfig(epochs=1, batch_size=4), fs, det, gt, labelmap_file,
              tmp_path / "m.pt")
    cfg = evaluate.EvalConfig()
    full = evaluate.run(cfg, tmp_path / "m.pt", fs, det, gt, labelmap_file, tmp_path / "m.json",
                        tmp_path / "all.csv")
    for i in range(3):
        assert evaluate.run(cfg, tmp_path / "m.pt", fs, det, gt, labelmap_file,
                            tmp_path / "unused.json", tmp_path / f"p{i}.csv",
                            shard=(i, 3)) == {}
    assert not (tmp_path / "unused.json").exists()
    evaluate.merge_predictions([tmp_path / f"p{i}.csv" for i in (2, 0, 1)], tmp_path / "mg.csv")
    assert (tmp_path / "mg.csv").read_bytes() == (tmp_path / "all.csv").read_bytes()
    merged = evaluate.score(tmp_path / "mg.csv", gt, labelmap_file, None, tmp_path / "m2.json")
    assert merged["mAP"] == full["mAP"]


def test_a_failed_eval_leaves_old_outputs_untouched(tmp_path, feature_store, detections_file,
                                                    labelmap_file, monkeypatch):
    """Predictions, plots and metrics are renamed into place together, after scoring."""
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    train.run(train.TrainConfig(epochs=1, batch_size=4), feature_store, detections_file, gt,
              labelmap_file, tmp_path / "m.pt")
    out, pred, plots = tmp_path / "e" / "metrics.json", tmp_path / "e" / "pred.csv", \
        tmp_path / "e" / "plots"
    args = (evaluate.EvalConfig(), tmp_path / "m.pt", feature_store, detections_file, gt,
            labelmap_file, out, pred)
    evaluate.run(*args, plots_dir=plots)
    classes = out.with_name("per_class.json")
    table = pred.with_suffix(".parquet")              # the prediction table, with logits
    before = {p: p.read_bytes() for p in (out, classes, pred, table, *plots.iterdir())}

    def broken(*a, **k):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(evaluate, "score_files", broken)
    pred.write_bytes(b"old predictions\n")
    before[pred] = pred.read_bytes()
    with pytest.raises(RuntimeError, match="scoring failed"):
        evaluate.run(*args, plots_dir=plots)
    assert {p: p.read_bytes() for p in (out, classes, pred, table, *plots.iterdir())} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json", "per_class.json",
                                                            "plots", "pred.csv", "pred.parquet"]


def test_scoring_a_csv_imports_neither_torch_nor_the_heads(tmp_path):
    """`acar eval --predictions` in a fresh interpreter: no torch, no pipeline.models."""
    data = Path(__file__).parent / "data" / "eval_detection"
    code = (
        "import sys\n"
        "from cli.main import main\n"
        f"sys.argv = ['acar', 'eval', '--predictions', {str(data / 'pred.csv')!r},"
        f" '--annotations', {str(data / 'gt.csv')!r}, '--labelmap',"
        f" {str(data / 'action_list.txt')!r}, '--out', {str(tmp_path / 'm.json')!r},"
        f" '--plots-dir', {str(tmp_path / 'plots')!r}]\n"
        "main()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch'"
        " or m.startswith(('pipeline.models', 'pipeline.inference', 'pipeline.bank_reader'))"
        " and m != 'pipeline.inference_config']\n"
        "print('LOADED', bad)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout, res.stdout
    assert read_metrics(tmp_path / "m.json")["mAP"] == pytest.approx(0.0938552, abs=1e-6)


def test_scoring_annotations_without_a_box_is_one_line_and_writes_nothing(tmp_path):
    """Empty ground truth gave `mAP nan` with exit 0; now a one-line error, no metrics."""
    from click.testing import CliRunner

    from cli.main import cli

    data = ROOT / "tests" / "data" / "eval_detection"
    gt = tmp_path / "gt.csv"
    gt.write_text("")
    out = tmp_path / "m.json"
    res = CliRunner().invoke(cli, ["eval", "--predictions", str(data / "pred.csv"),
                                   "--annotations", str(gt), "--labelmap",
                                   str(data / "action_list.txt"), "--out", str(out)])
    assert res.exit_code != 0 and not out.exists()
    assert str(res.exception).startswith(f"{gt}: no ground-truth box")   # main() prints it
    assert "\n" not in str(res.exception)
