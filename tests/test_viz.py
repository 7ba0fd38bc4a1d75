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
    (box, acts, pid), = people[1]
    assert pid is None                                       # no track_id / person_id column
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
    rows = np.flatnonzero((drawn[:, :, :] == viz.person_colour(0)).all(axis=2).any(axis=1))
    assert rows.max() - rows.min() > 0.6 * height - 4       # the box outline, at scale
    label = np.flatnonzero((drawn == viz.class_colour(1)).all(axis=2).any(axis=1))
    assert 0.8 * height / 30 < label.max() - label.min() + 1 < 3 * height / 30


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ArtifactError, match="bad.mp4: cannot decode video"):
        viz.render_video(bad, tmp_path / "o.mp4", _pred("bad", [1]))
    assert not (tmp_path / "o.mp4").exists()


def _frame_people(boxes):
    return [(np.asarray(b, np.float32), [(1, 0.9)], None) for b in boxes]


def test_person_colours_follow_the_boxes_over_keyframes():
    """Two people walking past each other, listed in another order at each keyframe, and a
    third arriving at t=3: each keeps its number (its colour); the newcomer gets a new one."""
    a = [(0.10 + 0.05 * t, 0.2, 0.30 + 0.05 * t, 0.9) for t in range(4)]
    b = [(0.70 - 0.05 * t, 0.1, 0.90 - 0.05 * t, 0.8) for t in range(4)]
    table = {1: _frame_people([a[0], b[0]]), 2: _frame_people([b[1], a[1]]),
             3: _frame_people([(0.0, 0.0, 0.1, 0.1), a[2], b[2]]), 4: _frame_people([a[3]])}
    ids = viz.person_ids(table)
    assert ids == {1: [0, 1], 2: [1, 0], 3: [2, 0, 1], 4: [0]}
    assert viz.person_colour(0) != viz.person_colour(1) != viz.person_colour(2)
    # a track id on the rows wins over the matching
    pred = pd.concat([_pred("v", [1], box=a[0]).assign(track_id=7),
                      _pred("v", [2], box=a[1]).assign(track_id=7),
                      _pred("v", [2], box=b[1]).assign(track_id=3)])
    people = viz.person_actions(pred, viz.VizConfig())
    assert viz.person_ids(people) == {1: [7], 2: [7, 3]}


def test_boxes_take_the_person_colour_and_labels_the_class_colour():
    frame = np.zeros((240, 320, 3), np.uint8)
    people = [(np.array([0.1, 0.3, 0.4, 0.9], np.float32), [(5, 0.9)]),
              (np.array([0.6, 0.3, 0.9, 0.9], np.float32), [(5, 0.8)])]
    drawn = viz.draw_frame(frame, people, None, viz.VizConfig(), persons=[4, 2])
    for pid in (4, 2):
        assert (drawn == viz.person_colour(pid)).all(axis=2).sum() > 100
    assert (drawn == viz.class_colour(5)).all(axis=2).sum() > 100   # both labels: class 5


def test_label_text_is_readable_on_every_class_colour():
    """Black or white text, whichever contrasts more: WCAG AA (4.5) on every colour, among
    them the brown of "warm" (class 5), which white text failed on a brown scene."""
    for colour in viz.PALETTE + viz.PERSON_PALETTE:
        assert viz.contrast(colour, viz.text_colour(colour)) >= 4.5, colour
    brown = viz.class_colour(5)
    assert viz.text_colour(brown) == (255, 255, 255)
    frame = np.full((240, 320, 3), brown, np.uint8)                 # brown on brown
    drawn = viz.draw_frame(frame, [(np.array([0.3, 0.4, 0.6, 0.9], np.float32), [(5, 0.9)])],
                           None, viz.VizConfig())
    inside = drawn[40:100, 80:200]
    assert ((inside == 255).all(axis=2)).sum() > 20                 # the block's border/text
    assert viz.contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)


def test_viz_detections_draws_boxes_and_scores_before_any_model(synth_world, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    from pipeline.artifacts.detections import write_detections

    gt = read_annotations(synth_world / "val.csv")
    boxes = gt[gt.video_id == "val_000"][["video_id", "timestamp", "x1", "y1", "x2", "y2"]]
    dets = boxes.drop_duplicates().assign(score=0.81)
    write_detections(dets, tmp_path / "d.parquet", {"source": "test"})
    res = CliRunner().invoke(cli, ["viz", "--detections", str(tmp_path / "d.parquet"),
                                   "--videos", str(synth_world / "videos"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out" / "val_000_detections.mp4"
    assert res.output.strip().endswith(str(out)) and out.exists()
    src = synth_world / "videos" / "val_000.mp4"
    assert video_info(out).num_frames == video_info(src).num_frames
    drawn, original = open_video(out).read([0, 8]), open_video(src).read([0, 8])
    diff = [np.abs(drawn[i].astype(int) - original[i]).mean() for i in (0, 1)]
    assert diff[1] > 2 * diff[0], diff            # t=0 untouched (codec noise); t=1 drawn
    both = CliRunner().invoke(cli, ["viz", "--videos", str(synth_world / "videos")])
    assert both.exit_code != 0 and "one of --predictions or --detections" in both.output
    high = CliRunner().invoke(cli, ["viz", "--detections", str(tmp_path / "d.parquet"),
                                    "--videos", str(synth_world / "videos"),
                                    "--det-score-thr", "0.9", "--out", str(tmp_path / "o2")])
    assert high.exit_code != 0 and "scoring >= 0.9" in high.output
