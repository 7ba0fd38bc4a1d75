"""AVA frame-mAP: golden value, exact agreement with the slow oracle, robustness, CLI."""

from __future__ import annotations

import heapq
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli.main import cli
from pipeline import ava_eval, evaluate
from pipeline.artifacts import ArtifactError, annotations, predictions
from pipeline.artifacts.labelmap import LabelMap, write_labelmap
from pipeline.ava_eval import frame_map, score_files

try:  # tests/ is not a package: pytest puts it on sys.path
    from ava_reference import reference_frame_map
except ImportError:  # pragma: no cover - if tests/ becomes a package
    from tests.ava_reference import reference_frame_map

DATA = Path(__file__).parent / "data" / "eval_detection"
LABELS = (1, 3, 4, 7, 9)
UNKNOWN = (2, 99)
LABELMAP = LabelMap(LABELS, ("bend", "crouch", "dance", "carry", "talk"),
                    ("pose", "pose", "object", "object", "person"))


# --------------------------------------------------------------------------- golden


def test_golden_mmaction2_fixture(tmp_path):
    """mmaction2's eval_detection fixture; the official evaluator gives 0.0938552."""
    m = evaluate.score(DATA / "pred.csv", DATA / "gt.csv", DATA / "action_list.txt", None,
                       tmp_path / "metrics.json", plots_dir=tmp_path / "plots")
    assert m["mAP"] == pytest.approx(0.0938552, abs=1e-6)
    aps = [m["per_class"][k]["ap"] for k in ("1", "2", "3")]
    assert aps == pytest.approx([0.17045454545, 0.0, 0.11111111111], abs=1e-6)
    assert [m["per_class"][k]["num_gt"] for k in ("1", "2", "3")] == [4, 3, 5]
    assert {**json.loads((tmp_path / "metrics.json").read_text()),
            "per_class": json.loads((tmp_path / "per_class.json").read_text())} == m
    assert set(m) == {"mAP", "per_class", "per_superclass", "keyframes", "boxes"}
    gt = pd.read_csv(DATA / "gt.csv", header=None)
    assert m["keyframes"] == len(gt[[0, 1]].drop_duplicates())
    assert m["boxes"] == len(gt[[0, 1, 2, 3, 4, 5]].drop_duplicates())
    lines = (tmp_path / "plots" / "per_class_ap.csv").read_text().splitlines()
    assert lines[0] == "action_id,name,ap,num_gt"
    assert lines[1] == "1,action1,0.170455,4"
    png = (tmp_path / "plots" / "pr_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")


# --------------------------------------------------------------------------- generators


def _box(rng, dyadic):
    if dyadic:  # a coarse dyadic grid: identical boxes and exact IoU ties happen
        x1, x2 = sorted(rng.choice(5, 2, replace=False) / 4)
        y1, y2 = sorted(rng.choice(5, 2, replace=False) / 4)
    else:
        x1, x2 = sorted(np.round(rng.uniform(0, 1, 2), 3))
        y1, y2 = sorted(np.round(rng.uniform(0, 1, 2), 3))
    return [float(x1), float(y1), float(x2), float(y2)]


def _near(rng, box, dyadic):
    if dyadic:
        b = np.clip(np.array(box) + rng.choice([-0.25, 0, 0, 0.25], 4), 0, 1)
    else:
        b = np.clip(np.round(np.array(box) + rng.normal(0, 0.04, 4), 3), 0, 1)
    return [float(v) for v in b]


def make_case(seed: int, ties: bool = False, dyadic: bool = False):
    """Random case with every trap: cap with cross-class competition (and score ties),
    excluded frames, frames without GT, '0902' vs '902', unknown class ids, invalid boxes
    taking cap slots, duplicate predictions and duplicate GT, a class with GT but no
    predictions, a class without GT, shuffled (ungrouped) rows."""
    rng = np.random.default_rng(seed)
    videos = [f"v{i}" for i in range(rng.integers(1, 4))]
    frames = [(v, t) for v in videos for t in range(899, 899 + rng.integers(2, 6))]

    def stamp(t):
        return f"{t:04d}" if rng.random() < 0.5 else str(t)

    def score():
        return float(rng.choice(np.arange(1, 10) / 10)) if ties else float(rng.random())

    no_gt_class = LABELS[-1] if rng.random() < 0.7 else None
    no_pred_class = LABELS[0] if rng.random() < 0.7 else None
    gt_rows, people = [], {}
    for v, t in frames:
        if rng.random() < 0.2:
            continue  # a frame without GT
        for p in range(rng.integers(1, 5 if dyadic else 4)):
            box = _box(rng, dyadic)
            people.setdefault((v, t), []).append(box)
            pid = 0 if dyadic or rng.random() < 0.3 else p  # equal ids: file order matters
            for a in rng.choice(LABELS + UNKNOWN, rng.integers(1, 4), replace=False):
                if int(a) == no_gt_class:
                    continue
                gt_rows.append((v, stamp(t), *box, int(a), pid))
                if rng.random() < 0.1:  # duplicate GT row
                    gt_rows.append(gt_rows[-1])
    excluded = [f for f in frames if rng.random() < 0.15] + [("ghost", 1000)]

    pred_rows = []
    for v, t in frames + [("nogt", 901)]:
        crowded = rng.random() < 0.35
        boxes = [_near(rng, b, dyadic) for b in people.get((v, t), [])]
        boxes += [_box(rng, dyadic) for _ in range(rng.integers(0, 3) + 10 * crowded)]
        for box in boxes:
            if rng.random() < 0.07:  # invalid box, high score: takes a cap slot
                box = [box[0], box[1], box[0], box[3]] if rng.random() < 0.5 else \
                    [box[0], box[3], box[2], box[1]]
            classes = LABELS + UNKNOWN if crowded or rng.random() < 0.3 else \
                tuple(rng.choice(LABELS + UNKNOWN, rng.integers(1, 4), replace=False))
            for a in classes:
                if int(a) == no_pred_class:
                    continue
                s = 0.99 + 0.001 * rng.random() if box[0] >= box[2] or box[1] >= box[3] \
                    else score()
                pred_rows.append((v, stamp(t), *box, int(a), s))
                if rng.random() < 0.1:  # duplicate prediction, other score
                    pred_rows.append((v, stamp(t), *box, int(a), score()))
    if rng.random() < 0.5:
        pred_rows = [pred_rows[i] for i in rng.permutation(len(pred_rows))]
    return gt_rows, pred_rows, excluded


def _frames(gt_rows, pred_rows, excluded, categorical=False):
    gt = pd.DataFrame(gt_rows, columns=annotations.COLUMNS)
    pred = pd.DataFrame(pred_rows, columns=predictions.COLUMNS)
    ex = pd.DataFrame(excluded, columns=annotations.EXCLUDED_COLUMNS)
    for df in (gt, pred, ex):
        df["timestamp"] = df["timestamp"].astype(np.int64)
        if categorical:
            df["video_id"] = df["video_id"].astype("category")
    return gt, pred, ex


def _assert_same(metrics: dict, ref) -> None:
    ref_map, ref_ap, ref_n = ref
    if math.isnan(ref_map):
        assert math.isnan(metrics["mAP"])
    else:
        assert metrics["mAP"] == pytest.approx(ref_map, abs=1e-9, rel=0)
    for a, ap in ref_ap.items():
        got = metrics["per_class"][str(a)]
        assert got["num_gt"] == ref_n[a]
        if math.isnan(ap):
            assert got["ap"] is None
        else:
            assert got["ap"] == pytest.approx(ap, abs=1e-9, rel=0), a


# --------------------------------------------------------------------------- vs oracle


@pytest.mark.parametrize("mode", ["distinct", "dyadic", "ties", "dyadic-ties"])
def test_matches_reference(mode):
    for seed in range(60):
        gt_rows, pred_rows, excluded = make_case(seed, ties="ties" in mode,
                                                 dyadic="dyadic" in mode)
        ref = reference_frame_map(gt_rows, pred_rows, LABELS, excluded)
        gt, pred, ex = _frames(gt_rows, pred_rows, excluded, categorical=seed % 2 == 1)
        try:
            _assert_same(frame_map(gt, pred, LABELMAP, ex).metrics, ref)
        except AssertionError as err:
            raise AssertionError(f"{mode} seed {seed}: {err}") from err


def test_matches_reference_through_files(tmp_path):
    """'0902' and '902' are one frame only once parsed; go through the CSV files."""
    for seed in range(15):
        gt_rows, pred_rows, excluded = make_case(1000 + seed)
        paths = {}
        for name, rows in [("gt", gt_rows), ("pred", pred_rows), ("ex", excluded)]:
            paths[name] = tmp_path / f"{name}{seed}.csv"
            paths[name].write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
        write_labelmap(LABELMAP, tmp_path / "lm.pbtxt")
        m = score_files(paths["pred"], paths["gt"], tmp_path / "lm.pbtxt", paths["ex"]).metrics
        _assert_same(m, reference_frame_map(gt_rows, pred_rows, LABELS, excluded))
        assert m["per_superclass"].keys() == {"pose", "object", "person"}


def _heap_survivors(frame, score, keys, capacity):
    """Literal per-frame heap of the official reader; returns kept row positions."""
    heaps: dict[int, list] = {}
    for i in range(len(frame)):
        heap = heaps.setdefault(int(frame[i]), [])
        item = (score[i], *keys[i], i)
        if len(heap) < capacity:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
    return sorted(e[-1] for h in heaps.values() for e in h)


@pytest.mark.parametrize("capacity", [3, 50])
def test_cap_matches_heap(capacity):
    """The closed form of the top-k cap equals the streaming heap, ties included."""
    rng = np.random.default_rng(capacity)
    for _ in range(40):
        counts = rng.integers(0, 4 * capacity, rng.integers(1, 12))
        frame = np.repeat(np.arange(len(counts)), counts)
        n = len(frame)
        score = rng.choice([-np.inf, 0.1, 0.2, 0.3, 0.5, np.inf], n,
                           p=[0.05, 0.3, 0.3, 0.2, 0.1, 0.05])
        keys = rng.integers(0, 3, (n, 5)).astype(float)  # action, y1, x1, y2, x2
        keys[:, 0] = rng.integers(1, 4, n)
        expected = _heap_survivors(frame, score, [tuple(k) for k in keys], capacity)

        def tuple_keys(idx, keys=keys):
            return [idx, keys[idx, 4], keys[idx, 3], keys[idx, 2], keys[idx, 1], keys[idx, 0]]

        got = ava_eval._cap_mask(frame, score, tuple_keys, len(counts), capacity)
        assert np.flatnonzero(got).tolist() == expected


# --------------------------------------------------------------------------- planted traps


def _run(gt_rows, pred_rows, excluded=(), labels=LABELMAP):
    gt, pred, ex = _frames(gt_rows, pred_rows, list(excluded))
    return frame_map(gt, pred, labels, ex).metrics


def test_equal_iou_tie_uses_official_gt_order():
    """A prediction with equal IoU to two GT boxes of one person id takes the first box of
    the official (heap) order, not of the file: here box A although B is read first."""
    a = [0.0, 0.0, 0.75, 1.0]  # x1, y1, x2, y2
    b = [0.25, 0.0, 1.0, 1.0]
    d = [0.0, 0.0, 1.0, 1.0]  # IoU 0.75 with both
    gt = [("v", 1, *b, 1, 0), ("v", 1, *a, 1, 0)]
    pred = [("v", 1, *d, 1, 0.9), ("v", 1, *a, 1, 0.8)]  # the 2nd hits A only
    m = _run(gt, pred)
    assert m["per_class"]["1"]["ap"] == pytest.approx(0.5)  # D took A: the 2nd is a FP
    assert m["per_class"]["1"]["ap"] == reference_frame_map(gt, pred, LABELS)[1][1]
    # With person ids the official order is by descending person id: B (id 5) first.
    gt = [("v", 1, *a, 1, 2), ("v", 1, *b, 1, 5)]
    assert _run(gt, pred)["per_class"]["1"]["ap"] == pytest.approx(1.0)


def test_no_fallback_to_second_best_gt():
    g1, g2 = [0.0, 0.0, 0.5, 1.0], [0.3, 0.0, 0.8, 1.0]
    gt = [("v", 1, *g1, 1, 0), ("v", 1, *g2, 1, 1)]
    pred = [("v", 1, *g1, 1, 0.9),  # TP on g1
            ("v", 1, 0.05, 0.0, 0.55, 1.0, 1, 0.8)]  # best is g1 (taken), g2 IoU >= 0.5
    m = _run(gt, pred)
    assert m["per_class"]["1"]["ap"] == pytest.approx(0.5)


def test_invalid_boxes_take_cap_slots_and_unknown_classes_do_not():
    gt = [("v", 1, 0.1, 0.1, 0.4, 0.4, 1, 0)]
    hit = ("v", 1, 0.1, 0.1, 0.4, 0.4, 1, 0.5)
    invalid = [("v", 1, 0.5, 0.5, 0.5, 0.9, 3, 0.9)] * 50  # x1 == x2
    assert _run(gt, invalid + [hit])["mAP"] == 0.0  # hit is 51st: capped away
    unknown = [("v", 1, 0.5, 0.5, 0.6, 0.9, 2, 0.9)] * 50  # id 2 not in the label map
    assert _run(gt, unknown + [hit])["mAP"] == 1.0


def test_excluded_and_gtless_frames():
    gt = [("v", 902, 0.1, 0.1, 0.4, 0.4, 1, 0), ("v", 903, 0.1, 0.1, 0.4, 0.4, 1, 0)]
    pred = [("v", 902, 0.1, 0.1, 0.4, 0.4, 1, 0.5), ("v", 903, 0.5, 0.5, 0.9, 0.9, 1, 0.9),
            ("w", 902, 0.1, 0.1, 0.4, 0.4, 1, 0.8)]  # w has no GT: a false positive
    m = _run(gt, pred, excluded=[("v", 903)])
    assert m["per_class"]["1"]["num_gt"] == 1
    assert m["per_class"]["1"]["ap"] == pytest.approx(0.5)
    assert m["per_class"]["3"] == {"name": "crouch", "ap": None, "num_gt": 0}
    assert m["per_superclass"] == {"pose": pytest.approx(0.5), "object": None, "person": None}


def test_class_with_gt_but_no_predictions_counts_zero():
    gt = [("v", 1, 0.1, 0.1, 0.4, 0.4, 1, 0), ("v", 1, 0.1, 0.1, 0.4, 0.4, 3, 0)]
    pred = [("v", 1, 0.1, 0.1, 0.4, 0.4, 1, 0.5)]
    m = _run(gt, pred)
    assert m["per_class"]["3"]["ap"] == 0.0
    assert m["mAP"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- robustness


@pytest.fixture()
def files(tmp_path):
    write_labelmap(LABELMAP, tmp_path / "lm.pbtxt")
    (tmp_path / "gt.csv").write_text("v,0902,0.1,0.1,0.4,0.4,1,0\nv,0902,0.1,0.1,0.4,0.4,3,0\n")
    return tmp_path


@pytest.mark.parametrize("bad, problem", [
    ("v,0902,0.1,0.1,0.4,0.4,1\n", "expected 8 columns, got 7"),
    ("v,0902,0.1,abc,0.4,0.4,1,0.5\n", "column 'y1' must be a number, got 'abc'"),
    ("v,902.5,0.1,0.1,0.4,0.4,1,0.5\n", "column 'timestamp' must be an integer, got '902.5' "
                                         "(fractional timestamps are read with --mode "
                                         "official-2020)"),
    ("v,0902,0.1,0.1,0.4,0.4,1,\n", "empty value in column 'score'"),
    ("v,0902,0.1,0.1,0.4,0.4,1,nan\n", "score is not a number"),
])
def test_malformed_prediction_row(files, bad, problem):
    good = "v,0902,0.1,0.1,0.4,0.4,1,0.9\n"
    (files / "pred.csv").write_text(good + "\n" + good + bad + good)  # bad row on line 4
    with pytest.raises(ArtifactError) as err:
        score_files(files / "pred.csv", files / "gt.csv", files / "lm.pbtxt")
    assert str(err.value) == f"{files / 'pred.csv'}:4: {problem}"


def test_unreadable_labelmap(files):
    (files / "bad.pbtxt").write_text('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n'
                                     "  id: one\n}\n")
    with pytest.raises(ArtifactError, match=r"bad\.pbtxt:5: id must be an integer"):
        score_files(files / "gt.csv", files / "gt.csv", files / "bad.pbtxt")
    (files / "bin.pbtxt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ArtifactError, match=r"bin\.pbtxt"):
        score_files(files / "gt.csv", files / "gt.csv", files / "bin.pbtxt")


def test_empty_predictions_are_an_error_and_unmatched_ones_give_zero(files):
    (files / "pred.csv").write_text("")
    with pytest.raises(ArtifactError, match="pred.csv: no prediction rows"):
        evaluate.score(files / "pred.csv", files / "gt.csv", files / "lm.pbtxt", None,
                       files / "m.json")
    assert not (files / "m.json").exists()
    gt = (files / "gt.csv").read_text().splitlines()[0].split(",")
    (files / "pred.csv").write_text(f"{gt[0]},{gt[1]},0.9,0.9,0.95,0.95,1,0.9\n")  # no overlap
    m = evaluate.score(files / "pred.csv", files / "gt.csv", files / "lm.pbtxt", None,
                       files / "m.json")
    assert m["mAP"] == 0.0
    assert [m["per_class"][k]["ap"] for k in ("1", "3", "4")] == [0.0, 0.0, None]
    assert json.loads((files / "m.per_class.json").read_text())["4"]["ap"] is None


def test_nan_score_via_api_is_rejected():
    gt, pred, _ = _frames([("v", 1, 0.1, 0.1, 0.4, 0.4, 1, 0)],
                          [("v", 1, 0.1, 0.1, 0.4, 0.4, 1, float("nan"))], [])
    with pytest.raises(ValueError, match="NaN"):
        frame_map(gt, pred, LABELMAP)


def test_cli(files):
    (files / "pred.csv").write_text("v,902,0.1,0.1,0.4,0.4,1,0.9\n")
    args = ["eval", "--predictions", str(files / "pred.csv"), "--annotations",
            str(files / "gt.csv"), "--labelmap", str(files / "lm.pbtxt"),
            "--out", str(files / "out" / "metrics.json")]
    res = CliRunner().invoke(cli, [*args, "--plots-dir", str(files / "plots")])
    assert res.exit_code == 0, res.output
    assert json.loads((files / "out" / "metrics.json").read_text())["mAP"] == 0.5
    assert (files / "plots" / "pr_curves.png").exists()
    (files / "pred.csv").write_text("v,902,0.1\n")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    assert "pred.csv:1: expected 8 columns" in str(res.exception)


def test_nan_iou_is_never_a_match():
    """An inverted GT box can make a 0/0 IoU; ``np.argmax`` then picks the NaN, so the
    prediction is a false positive although another GT box overlaps it fully."""
    pred = [("v", 1, 0.0, 0.0, 0.5, 0.5, 1, 0.9)]  # area 0.25
    inverted = ("v", 1, 0.5, 0.0, 0.0, 0.5, 1, 0)  # area -0.25: union 0, IoU NaN
    good = ("v", 1, 0.0, 0.0, 0.5, 0.5, 1, 1)
    for gt in ([good, inverted], [inverted, good]):
        m = _run(gt, pred)
        assert m["per_class"]["1"]["ap"] == 0.0
        assert reference_frame_map(gt, pred, LABELS)[1][1] == 0.0
    assert _run([good], pred)["per_class"]["1"]["ap"] == 1.0


@pytest.mark.parametrize("n_frames", [100, 70_000, 3_000_000])
def test_group_order_is_a_stable_sort(n_frames):
    rng = np.random.default_rng(n_frames)
    frames = rng.integers(0, n_frames, 200_000)
    order = ava_eval._group_order(frames, n_frames)
    assert np.array_equal(order, np.argsort(frames, kind="stable"))
    assert ava_eval._group_order(np.sort(frames), n_frames) == slice(None)


def test_huge_timestamps():
    big = 4 * 10**18
    gt = [("v", big, 0.1, 0.1, 0.4, 0.4, 1, 0), ("v", -big, 0.1, 0.1, 0.4, 0.4, 1, 0)]
    pred = [("v", big, 0.1, 0.1, 0.4, 0.4, 1, 0.5), ("v", -big, 0.5, 0.5, 0.9, 0.9, 1, 0.9),
            ("v", 0, 0.1, 0.1, 0.4, 0.4, 1, 0.7)]
    m = _run(gt, pred, excluded=[("v", -big)])
    assert m["per_class"]["1"]["num_gt"] == 1
    assert m["mAP"] == pytest.approx(reference_frame_map(gt, pred, LABELS, [("v", -big)])[0])
