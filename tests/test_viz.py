import numpy as np
import pandas as pd
import pytest

from pipeline import viz
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import read_annotations
from pipeline.video import open_video, video_info


def _pred(video, ts_list, box=(0.2, 0.2, 0.6, 0.9)):
    rows = []
    for ts in ts_list:
        for a, s in [(1, 0.9), (2, 0.05), (4, 0.6), (3, 0.4)]:
            rows.append((video, ts, *box, a, s))
    return pd.DataFrame(rows, columns=["video_id", "timestamp", "x1", "y1", "x2", "y2",
                                       "action_id", "score"])


def test_person_actions_top_k_and_threshold():
    people = viz.person_actions(_pred("v", [1, 2]), viz.VizConfig(action_score_thr=0.3, top_k=2))
    assert sorted(people) == [1, 2]
    (box, acts), = people[1]
    assert acts == [(1, 0.9), (4, 0.6)]
    np.testing.assert_allclose(box, [0.2, 0.2, 0.6, 0.9])


def test_colours_are_stable_per_class():
    assert viz.class_colour(12) == viz.class_colour(12)
    assert viz.class_colour(1) != viz.class_colour(2)


def test_render_with_ground_truth_side_by_side(synth_world, tmp_path):
    from pipeline.synth import LABELMAP

    src = synth_world / "videos" / "val_000.mp4"
    gt = read_annotations(synth_world / "val.csv")
    out = viz.render_video(src, tmp_path / "val_000_actions.mp4", _pred("val_000", [1, 2, 3]),
                           LABELMAP, viz.VizConfig(), gt[gt.video_id == "val_000"])
    info, src_info = video_info(out), video_info(src)
    assert info.num_frames == src_info.num_frames
    assert (info.width, info.height) == (2 * src_info.width, src_info.height)
    frames = open_video(out).read([0, 8])
    original = open_video(src).read([0, 8])
    # frame 0 (t=0, no keyframe within 0.5 s) is untouched; frame 8 (t=1) has drawings
    below_title = slice(20, None)
    diff = [np.abs(frames[i, below_title, :96].astype(int) - original[i, below_title]).mean()
            for i in (0, 1)]
    assert diff[0] < 3 < diff[1]


@pytest.mark.parametrize("height", [240, 1080])
def test_text_scales_with_frame_height(height):
    frame = np.zeros((height, height * 16 // 9, 3), np.uint8)
    people = [(np.array([0.3, 0.3, 0.5, 0.9], np.float32), [(1, 0.9)])]
    drawn = viz.draw_frame(frame, people, None, viz.VizConfig())
    rows = np.flatnonzero((drawn[:, :, :] == viz.class_colour(1)).all(axis=2).any(axis=1))
    label_height = rows.max() - rows.min()                  # box outline + label background
    assert label_height > 0.3 * 0.6 * height                # spans the box: drawn at scale


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ArtifactError, match="bad.mp4: cannot decode video"):
        viz.render_video(bad, tmp_path / "o.mp4", _pred("bad", [1]))
    assert not (tmp_path / "o.mp4").exists()
