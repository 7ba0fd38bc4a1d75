import numpy as np

from pipeline import synth
from pipeline.artifacts.annotations import read_annotations, read_excluded
from pipeline.artifacts.labelmap import read_labelmap
from pipeline.video import video_info


def test_world_files_and_labels(synth_world):
    lm = read_labelmap(synth_world / "labelmap.pbtxt")
    assert lm == synth.LABELMAP
    train = read_annotations(synth_world / "train.csv")
    assert set(train["video_id"]) == {"train_000", "train_001"}
    assert set(train["timestamp"]) == {1, 2, 3}
    # exactly one pose per person and keyframe
    poses = train[train["action_id"].isin([synth.STAND, synth.SIT, synth.WALK])]
    assert not poses.duplicated(["video_id", "timestamp", "person_id"]).any()
    assert len(read_excluded(synth_world / "excluded.csv")) == 1
    info = video_info(synth_world / "videos" / "val_000.mp4")
    assert (info.width, info.height, info.num_frames, info.fps) == (96, 64, 32, 8.0)


def test_deterministic(tmp_path):
    cfg = synth.SynthConfig(num_train=1, num_val=1, duration=3, width=64, height=48)
    synth.run(cfg, tmp_path / "a")
    synth.run(cfg, tmp_path / "b")
    a_csv, b_csv = (tmp_path / d / "train.csv" for d in "ab")
    assert a_csv.read_bytes() == b_csv.read_bytes()
    a = np.frombuffer((tmp_path / "a" / "videos" / "train_000.mp4").read_bytes(), np.uint8)
    b = np.frombuffer((tmp_path / "b" / "videos" / "train_000.mp4").read_bytes(), np.uint8)
    assert np.array_equal(a, b)
