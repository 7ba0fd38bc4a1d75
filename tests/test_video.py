"""Video decoding: frame times from the container (or i/fps when they are garbage),
decord's over-counted last frame, clear errors for bad files."""

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_VIDEOS

from pipeline.artifacts import ArtifactError
from pipeline.video import Video, list_videos, nearest_frames, valid_times, write_video


def _frames(n=20, h=48, w=64):
    """Frame i is a flat grey of value 10 * i (easy to recognise after h264)."""
    return [np.full((h, w, 3), 10 * i, np.uint8) for i in range(n)]


def _grey(frames: np.ndarray) -> np.ndarray:
    return np.round(frames.reshape(len(frames), -1).mean(axis=1) / 10).astype(int)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {}
    for suffix in (".mp4", ".avi"):
        out[suffix] = d / f"grey{suffix}"
        write_video(_frames(), out[suffix], fps=10)
    return out


def test_nearest_frames_rounds_to_the_closest_start():
    times = np.arange(10) / 10.0
    np.testing.assert_array_equal(nearest_frames(times, [0.0, 0.04, 0.06, 0.5, 0.96, 5.0, -1]),
                                  [0, 0, 1, 5, 9, 9, 0])
    assert nearest_frames(np.array([0.0]), [3.0]).tolist() == [0]


def test_valid_times_rejects_garbage():
    good = np.stack([np.arange(5) / 25, np.arange(1, 6) / 25], axis=1)
    np.testing.assert_allclose(valid_times(good, 5, 25.0), np.arange(5) / 25)
    assert valid_times(np.full((5, 2), -3.689e17), 5, 25.0) is None      # h264 in .avi
    assert valid_times(np.zeros((5, 2)), 5, 25.0) is None                # not increasing
    assert valid_times(good * 10, 5, 25.0) is None                       # wrong time base
    assert valid_times(good, 4, 25.0) is None                            # count mismatch


def test_mp4_uses_container_times_and_avi_falls_back_to_fps(clips):
    mp4, avi = Video(clips[".mp4"]), Video(clips[".avi"])
    assert mp4.timestamps_from_container and not avi.timestamps_from_container
    for v in (mp4, avi):
        assert (v.num_frames, v.width, v.height) == (20, 64, 48) and v.fps == pytest.approx(10)
        np.testing.assert_allclose(v.times, np.arange(20) / 10, atol=1e-4)
        assert v.index_at(1.0).tolist() == [10]
    idx = [0, 3, 3, 19, 7]
    assert _grey(mp4.read(idx)).tolist() == idx
    np.testing.assert_array_equal(avi.read(idx), mp4.read(idx))


class _OverCounting:
    """decord-like reader that claims one frame more than it can decode."""

    def __init__(self, n):
        self.n, self.calls = n, []

    def __len__(self):
        return self.n + 1

    def get_avg_fps(self):
        return 10.0

    def get_frame_timestamp(self, idx):
        return np.stack([np.asarray(idx) / 10, (np.asarray(idx) + 1) / 10], axis=1)

    def get_batch(self, idx):
        self.calls.append(list(idx))
        if max(idx) >= self.n:
            raise RuntimeError("DECORDError: cannot seek to frame")
        return np.stack([np.full((4, 4, 3), i, np.uint8) for i in idx])


def test_undecodable_last_frame_is_dropped_not_fatal():
    reader = _OverCounting(12)
    video = Video("fake.mp4", reader=reader)
    assert video.num_frames == 13                        # believed until proven wrong
    assert video.read([11, 12])[:, 0, 0, 0].tolist() == [11, 11]
    assert video.num_frames == 12
    assert video.read([12])[:, 0, 0, 0].tolist() == [11]


def test_each_distinct_frame_is_decoded_once_in_order():
    reader = _OverCounting(40)
    video = Video("fake.mp4", reader=reader)
    reader.calls.clear()
    out = video.read([5, 3, 5, 0, 30, 3], max_batch=2)
    assert out[:, 0, 0, 0].tolist() == [5, 3, 5, 0, 30, 3]
    assert reader.calls == [[3], [5, 30]]               # frame 0 was kept from opening


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path):
    empty, junk = tmp_path / "empty.mp4", tmp_path / "junk.avi"
    empty.write_bytes(b"")
    junk.write_bytes(b"not a video" * 50)
    for path, problem in [(tmp_path / "missing.mp4", "video file not found"),
                          (empty, "empty (0 bytes)"), (junk, "cannot decode video")]:
        with pytest.raises(ArtifactError) as err:
            Video(path)
        assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)
        assert "\n" not in str(err.value)
    assert set(list_videos(tmp_path)) == {"empty", "junk"}


@pytest.mark.skipif(not (SHARED_VIDEOS / "pedestrians.mp4").exists(),
                    reason="../shared/videos/pedestrians.mp4 not present")
def test_real_video_times():
    v = Video(SHARED_VIDEOS / "pedestrians.mp4")
    assert (v.width, v.height, v.num_frames) == (768, 576, 400)
    assert v.fps == pytest.approx(10) and v.timestamps_from_container
    assert v.index_at([0.0, 5.0, 39.95]).tolist() == [0, 50, 399]
    assert v.read([399]).shape == (1, 576, 768, 3)


def _layout(root: Path, names: list[str]) -> Path:
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    return root


def test_recursive_layout_ids_are_stems_and_a_clash_names_both(tmp_path):
    # issue 20 item 10: videos/train/, videos/val/
    videos = _layout(tmp_path / "videos", ["train/a.mp4", "train/b.MKV", "val/deep/c.avi",
                                           "val/notes.txt", "top.mp4"])
    assert list_videos(videos) == {"top": videos / "top.mp4"}
    found = list_videos(videos, recursive=True)
    assert found == {"a": videos / "train/a.mp4", "b": videos / "train/b.MKV",
                     "c": videos / "val/deep/c.avi", "top": videos / "top.mp4"}
    (videos / "val" / "a.mov").write_bytes(b"")
    with pytest.raises(ArtifactError) as err:
        list_videos(videos, recursive=True)
    msg = str(err.value)
    assert "two videos have the id 'a': train/a.mp4 and val/a.mov" in msg and "\n" not in msg


def test_no_videos_error_counts_the_subfolders_and_says_recursive(tmp_path):
    from pipeline.video import VIDEO_EXTS, no_videos_error

    videos = _layout(tmp_path / "videos", ["train/a.mp4", "train/b.mp4", "val/c.mp4"])
    assert list_videos(videos) == {}
    msg = str(no_videos_error(videos, VIDEO_EXTS))
    assert "its subfolders hold videos: train/ (2), val/ (1): use --recursive" in msg


def test_detect_and_extract_cli_take_recursive(tmp_path):
    """--recursive reaches list_videos: gt boxes of a video in a subfolder are kept, and
    without the flag the error says to use it."""
    from click.testing import CliRunner

    from cli.main import cli as main

    videos = _layout(tmp_path / "videos", ["train/v1.mp4"])
    gt = tmp_path / "gt.csv"
    gt.write_text("v1,0902,0.1,0.2,0.5,0.9,1,0\n")
    args = ["detect", "--source", "gt", "--annotations", str(gt), "--videos", str(videos),
            "--out", str(tmp_path / "d.parquet")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "use --recursive" in str(res.exception)
    res = CliRunner().invoke(main, [*args, "--recursive"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == (f"detect (gt): 1 videos, 1 keyframes, 1 boxes, "
                                           f"0 failed ({tmp_path / 'd.parquet'})")
    from pipeline.artifacts.detections import read_detections

    assert list(read_detections(tmp_path / "d.parquet")[0]["video_id"]) == ["v1"]
    assert "--recursive" in CliRunner().invoke(main, ["extract", "--help"]).output
