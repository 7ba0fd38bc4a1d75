"""`acar ensemble`: the four schemes on hand-computed cases, the box alignment and its
errors, the atomic write, the logits eval now keeps, and a catalogue of bad inputs in the
style of tests/test_bad_inputs_*.py."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import ensemble
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.labelmap import write_labelmap
from pipeline.artifacts.predictions import (
    read_prediction_table,
    read_predictions,
    table_path,
    write_prediction_table,
    write_predictions,
)
from tests.conftest import LABELMAP, boxes_gt
from tests.test_bad_inputs_train_bank import _check, _realise, acar, snapshot

IDS = LABELMAP.ids            # (1, 2, 3, 5): 1, 2 the pose softmax group, 3 and 5 sigmoids
BOXES = {("va", 1): [(0.1, 0.2, 0.4, 0.9), (0.5, 0.2, 0.8, 0.9)],
         ("vb", 1): [(0.1, 0.1, 0.3, 0.5), (0.6, 0.1, 0.9, 0.5)]}


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rows(logits: dict[tuple, list[float]], with_logits: bool = True) -> pd.DataFrame:
    """Prediction rows of every box of BOXES; ``logits[(video, box index)]`` the box's
    logits in label-map order, scored as the heads score (pose softmax, else sigmoid)."""
    out = []
    for (video, ts), boxes in BOXES.items():
        for j, box in enumerate(boxes):
            z = logits[(video, j)]
            e = [math.exp(z[0]), math.exp(z[1])]
            scores = [e[0] / sum(e), e[1] / sum(e), sig(z[2]), sig(z[3])]
            for a, s, lg in zip(IDS, scores, z, strict=True):
                out.append((video, ts, *box, a, s, lg))
    df = pd.DataFrame(out, columns=["video_id", "timestamp", "x1", "y1", "x2", "y2",
                                    "action_id", "score", "logit"])
    return df if with_logits else df.drop(columns="logit")


def member(tmp: Path, name: str, logits: dict, with_table: bool = True,
           change=None) -> Path:
    """A member as eval writes it: predictions.csv with the table beside it."""
    df = rows(logits)
    if change is not None:
        df = change(df)
    path = tmp / name / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(df, path)
    if with_table:
        write_prediction_table(df, table_path(path), {"source": "test"})
    return path


def const(z: list[float]) -> dict:
    return {(v, j): z for v in ("va", "vb") for j in (0, 1)}


@pytest.fixture
def lm(tmp_path) -> Path:
    write_labelmap(LABELMAP, tmp_path / "lm.pbtxt")
    return tmp_path / "lm.pbtxt"


def run(tmp: Path, lm: Path, paths: list[Path], scheme: str, **kw) -> pd.DataFrame:
    ann = kw.pop("annotations", None)
    cfg = ensemble.EnsembleConfig(scheme=scheme, **kw)
    out = tmp / "ens" / f"{scheme}.csv"
    ensemble.run(cfg, [(p.parent.name, p) for p in paths], lm, out, ann)
    return read_prediction_table(table_path(out))[0]


def score_of(df: pd.DataFrame, video: str, j: int, action: int) -> float:
    box = BOXES[(video, 1)][j]
    sel = df[(df.video_id == video) & np.isclose(df.x1, box[0]) & (df.action_id == action)]
    assert len(sel) == 1
    return float(sel.score.iloc[0])


# ---- the schemes, by hand ---------------------------------------------------------------

def test_three_members_by_hand(tmp_path, lm):
    """Logits (pose 1, pose 2, class 3, class 5) per member; every box the same."""
    paths = [member(tmp_path, "a", const([1.0, 0.0, 0.0, -1.0])),
             member(tmp_path, "b", const([3.0, 0.0, 2.0, -1.0])),
             member(tmp_path, "c", const([2.0, 0.0, 4.0, 2.0]))]
    mean_logit = run(tmp_path, lm, paths, "mean_logit")
    # class 3: mean logit 2 -> sigmoid; pose: mean logits (2, 0) -> softmax
    assert score_of(mean_logit, "va", 0, 3) == pytest.approx(sig(2.0), abs=1e-6)
    assert score_of(mean_logit, "va", 0, 1) == pytest.approx(math.e ** 2 / (math.e ** 2 + 1),
                                                             abs=1e-6)
    assert score_of(mean_logit, "vb", 1, 2) == pytest.approx(1 / (math.e ** 2 + 1), abs=1e-6)
    assert float(mean_logit[mean_logit.action_id == 5].logit.iloc[0]) == pytest.approx(0.0)
    mean_score = run(tmp_path, lm, paths, "mean_score")
    assert score_of(mean_score, "va", 0, 3) == pytest.approx(
        (0.5 + sig(2.0) + sig(4.0)) / 3, abs=1e-6)
    assert score_of(mean_score, "va", 0, 5) == pytest.approx(
        (2 * sig(-1.0) + sig(2.0)) / 3, abs=1e-6)
    assert "logit" not in mean_score                            # a scores-only table
    top = run(tmp_path, lm, paths, "topk_logit")                # n = 3: k = 1, the max
    assert score_of(top, "vb", 0, 3) == pytest.approx(sig(4.0), abs=1e-6)
    assert score_of(top, "vb", 0, 5) == pytest.approx(sig(2.0), abs=1e-6)
    pose = math.e ** 3 / (math.e ** 3 + 1)                      # max logits (3, 0)
    assert score_of(top, "vb", 0, 1) == pytest.approx(pose, abs=1e-6)


def test_topk_is_the_mean_of_the_k_largest_logits(tmp_path, lm):
    z3 = [0.0, 2.0, 4.0, -6.0]                     # n = 4: k = 2 -> (4 + 2) / 2 = 3
    paths = [member(tmp_path, f"m{i}", const([0.0, 0.0, z, 0.0])) for i, z in enumerate(z3)]
    top = run(tmp_path, lm, paths, "topk_logit")
    assert score_of(top, "va", 1, 3) == pytest.approx(sig(3.0), abs=1e-6)
    assert score_of(run(tmp_path, lm, paths, "mean_logit"), "va", 1, 3) == pytest.approx(0.5)
    k3 = run(tmp_path, lm, paths, "topk_logit", topk=3)         # (4 + 2 + 0) / 3
    assert score_of(k3, "va", 1, 3) == pytest.approx(sig(2.0), abs=1e-6)


def test_identical_members_give_the_member_back(tmp_path, lm):
    rng = np.random.default_rng(0)
    z = {(v, j): list(rng.normal(size=4) * 3) for v in ("va", "vb") for j in (0, 1)}
    paths = [member(tmp_path, "a", z), member(tmp_path, "b", z)]
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"va": 1, "vb": 1}), gt)
    want = rows(z).sort_values(["video_id", "x1", "action_id"]).reset_index(drop=True)
    for scheme in ensemble.SCHEMES:
        got = run(tmp_path, lm, paths, scheme, annotations=gt)
        got = got.sort_values(["video_id", "x1", "action_id"]).reset_index(drop=True)
        np.testing.assert_allclose(got.score, want.score, atol=1e-6, err_msg=scheme)
        if scheme in ensemble.NEEDS_LOGITS:
            np.testing.assert_allclose(got.logit, want.logit, atol=1e-6)


def _ap_world(tmp: Path, label_va: bool) -> tuple[list[Path], Path]:
    """Class 3 is on box 0 of vb (and, if ``label_va``, on box 1 of va).  On vb, member a
    ranks box 0 first (AP 1) and member b second (AP 0.5)."""
    za = {("va", 0): [0, 0, 1.0, 0], ("va", 1): [0, 0, -1.0, 0],
          ("vb", 0): [0, 0, 2.0, 0], ("vb", 1): [0, 0, -2.0, 0]}
    zb = {("va", 0): [0, 0, -1.0, 0], ("va", 1): [0, 0, 3.0, 0],
          ("vb", 0): [0, 0, 0.0, 0], ("vb", 1): [0, 0, 1.0, 0]}
    gt_rows = [("vb", 1, *BOXES[("vb", 1)][0], 3, 0)]
    if label_va:
        gt_rows.append(("va", 1, *BOXES[("va", 1)][1], 3, 1))
    gt = tmp / ("gt_va.csv" if label_va else "gt.csv")
    write_annotations(pd.DataFrame(gt_rows, columns=["video_id", "timestamp", "x1", "y1",
                                                     "x2", "y2", "action_id", "person_id"]), gt)
    return [member(tmp, "a", za), member(tmp, "b", zb)], gt


def test_ap_weights_are_cross_fitted(tmp_path, lm):
    """Two folds: va (fold 0) is weighted by the APs on vb, vb by those on va."""
    paths, gt = _ap_world(tmp_path, label_va=False)
    df = run(tmp_path, lm, paths, "ap_weight", annotations=gt)
    # va, class 3: weights 1 / 1.5 and 0.5 / 1.5 (APs 1 and 0.5 on vb)
    assert score_of(df, "va", 0, 3) == pytest.approx((2 * sig(1.0) + sig(-1.0)) / 3, abs=1e-6)
    assert score_of(df, "va", 1, 3) == pytest.approx((2 * sig(-1.0) + sig(3.0)) / 3, abs=1e-6)
    # va, pose and class 5: no ground truth on vb -> equal weights
    assert score_of(df, "va", 0, 5) == pytest.approx(0.5, abs=1e-6)
    # vb: va has no ground truth at all -> equal weights, the plain mean of the scores
    assert score_of(df, "vb", 0, 3) == pytest.approx((sig(2.0) + sig(0.0)) / 2, abs=1e-6)


def test_ap_weights_never_see_the_labels_they_score(tmp_path, lm):
    """Labelling va changes vb's scores (fitted on va) and never va's own."""
    paths, gt = _ap_world(tmp_path, label_va=False)
    before = run(tmp_path, lm, paths, "ap_weight", annotations=gt)
    _, gt_va = _ap_world(tmp_path, label_va=True)
    after = run(tmp_path, lm, paths, "ap_weight", annotations=gt_va)
    va = before.video_id == "va"
    np.testing.assert_allclose(after[va].score, before[va].score, atol=1e-7)
    assert not np.allclose(after[~va].score, before[~va].score)


def _gt(tmp: Path, rows: list[tuple], name: str = "gt.csv") -> Path:
    gt = tmp / name
    write_annotations(pd.DataFrame(rows, columns=["video_id", "timestamp", "x1", "y1", "x2",
                                                  "y2", "action_id", "person_id"]), gt)
    return gt


def test_greedy_leaves_out_a_member_that_does_not_help(tmp_path, lm):
    """_ap_world: a ranks vb's class-3 box first (AP 1), adding b cannot raise it; va's
    fold is fitted on vb and keeps a alone; vb's is fitted on va, which has no labels, so
    it keeps both (as ap_weight weighs them equally there)."""
    paths, gt = _ap_world(tmp_path, label_va=False)
    key = ["video_id", "x1", "action_id"]
    plain = run(tmp_path, lm, paths, "mean_score").sort_values(key)
    df = run(tmp_path, lm, paths, "mean_score", annotations=gt, select="greedy")
    df = df.sort_values(key)
    a = read_prediction_table(table_path(paths[0]))[0].sort_values(key)   # a's own scores
    va = (df.video_id == "va").to_numpy()
    np.testing.assert_allclose(df.score[va], a.score[va], atol=1e-7)
    np.testing.assert_allclose(df.score[~va], plain.score[~va], atol=1e-7)
    assert not np.allclose(plain.score[va], a.score[va])            # all: not a alone
    _, meta = read_prediction_table(tmp_path / "ens" / "mean_score.parquet")
    assert [f["members"] for f in meta["folds"]] == [["a"], ["a", "b"]]
    assert meta["folds"][0]["steps"] == [{"add": "a", "mAP": 1.0}] and meta["select"] == "greedy"


def test_greedy_adds_the_member_that_completes_another(tmp_path, lm):
    """a is right on class 3 and wrong on 5, b the reverse: each alone has mAP 0.75 on a
    video, their mean logits rank both classes right (mAP 1), so both are chosen."""
    za = {(v, j): [0, 0, 3.0 if j == 0 else -3.0, 1.0 if j == 0 else -1.0]
          for v in ("va", "vb") for j in (0, 1)}
    zb = {(v, j): [0, 0, -1.0 if j == 0 else 1.0, -3.0 if j == 0 else 3.0]
          for v in ("va", "vb") for j in (0, 1)}
    paths = [member(tmp_path, "a", za), member(tmp_path, "b", zb)]
    gt = _gt(tmp_path, [(v, 1, *BOXES[(v, 1)][j], c, j) for v in ("va", "vb")
                        for j, c in ((0, 3), (1, 5))])
    df = run(tmp_path, lm, paths, "mean_logit", annotations=gt, select="greedy")
    _, meta = read_prediction_table(tmp_path / "ens" / "mean_logit.parquet")
    assert [f["members"] for f in meta["folds"]] == [["a", "b"], ["a", "b"]]
    assert [s["mAP"] for s in meta["folds"][0]["steps"]] == [0.75, 1.0]
    np.testing.assert_allclose(df.score, run(tmp_path, lm, paths, "mean_logit").score,
                               atol=1e-7)                    # both chosen: the plain mean
    with pytest.raises(ArtifactError, match="ensemble.select greedy chooses its members"):
        run(tmp_path, lm, paths, "mean_logit", select="greedy")
    with pytest.raises(ArtifactError, match="ensemble.select: unknown selection 'best'"):
        ensemble.EnsembleConfig(select="best")


# ---- alignment, old files, errors -------------------------------------------------------

def test_row_order_does_not_matter(tmp_path, lm):
    z = const([1.0, 0.5, 0.2, -0.3])
    a = member(tmp_path, "a", z)
    b = member(tmp_path, "b", const([0.0, 1.0, 2.0, 1.0]),
               change=lambda df: df.sample(frac=1.0, random_state=1))
    c = member(tmp_path, "c", const([0.0, 1.0, 2.0, 1.0]))
    np.testing.assert_allclose(run(tmp_path, lm, [a, b], "mean_logit").score,
                               run(tmp_path, lm, [a, c], "mean_logit").score, atol=1e-7)


def test_a_csv_without_table_serves_the_score_schemes_only(tmp_path, lm):
    a = member(tmp_path, "a", const([1.0, 0.0, 0.0, -1.0]))
    old = member(tmp_path, "old", const([3.0, 0.0, 2.0, -1.0]), with_table=False)
    df = run(tmp_path, lm, [a, old], "mean_score")       # CSV boxes at 6 digits still match
    assert score_of(df, "va", 0, 3) == pytest.approx((0.5 + sig(2.0)) / 2, abs=1e-5)
    for scheme in ensemble.NEEDS_LOGITS:
        with pytest.raises(ArtifactError, match=f"old/predictions.csv: no logits.*{scheme}"):
            run(tmp_path, lm, [a, old], scheme)


@pytest.mark.parametrize("change, problem", [
    (lambda df: df.assign(x1=np.where(df.video_id == "vb", df.x1 + 0.05, df.x1)),
     "not the same boxes as .*keyframe vb@1"),
    (lambda df: df[df.video_id != "vb"], r"not the same boxes .*2 vs 4 boxes.*vb@1"),
    (lambda df: df.assign(timestamp=np.where(df.video_id == "va", 2, df.timestamp)),
     "not the same boxes as .*keyframe va@"),
    (lambda df: df.drop(index=5), r"one row per label-map class \(4\).*va@1"),
    (lambda df: df.assign(action_id=df.action_id.replace(5, 9)), "action id 9 is not in the"),
])
def test_mismatched_members_are_one_line_errors(tmp_path, lm, change, problem):
    a = member(tmp_path, "a", const([1.0, 0.0, 0.0, -1.0]))
    b = member(tmp_path, "b", const([1.0, 0.0, 0.0, -1.0]), change=change)
    with pytest.raises(ArtifactError, match=problem) as err:
        run(tmp_path, lm, [a, b], "mean_score")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ens").exists()


def test_write_is_atomic(tmp_path, lm, monkeypatch):
    """A failure while writing leaves the previous CSV and table as they were."""
    a = member(tmp_path, "a", const([1.0, 0.0, 0.0, -1.0]))
    b = member(tmp_path, "b", const([0.0, 1.0, 0.0, 1.0]))
    out = tmp_path / "ens" / "mean_logit.csv"
    run(tmp_path, lm, [a, b], "mean_logit")
    before = out.read_bytes(), table_path(out).read_bytes()
    assert len(read_predictions(out)) == 16                   # 4 boxes x 4 classes

    def fail(*args, **kw):
        raise OSError("disk full")
    monkeypatch.setattr(ensemble, "write_prediction_table", fail)
    with pytest.raises(OSError):
        run(tmp_path, lm, [a, b], "mean_score")
    assert (out.read_bytes(), table_path(out).read_bytes()) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["mean_logit.csv",
                                                            "mean_logit.parquet"]


def test_config_checks():
    from pipeline.config import RULES, load_config

    for bad in ({"scheme": "vote"}, {"topk": 0}, {"topk": 1.5}, {"folds": 1}):
        with pytest.raises(ArtifactError, match="ensemble"):
            ensemble.EnsembleConfig(**bad)
    assert tuple(RULES["ensemble"]["scheme"].choices) == ensemble.SCHEMES
    root = Path(__file__).resolve().parents[1]
    assert load_config(ensemble.EnsembleConfig, "ensemble", root / "stages.yaml") == \
        ensemble.EnsembleConfig(scheme="mean_logit", topk=None, folds=2, select="all")
    assert load_config(ensemble.EnsembleConfig, "ensemble", root / "grown" / "stages.yaml") == \
        ensemble.EnsembleConfig(scheme="mean_logit", topk=None, folds=2, select="greedy")


def test_ap_weight_records_its_weights(tmp_path, lm):
    paths, gt = _ap_world(tmp_path, label_va=False)
    run(tmp_path, lm, paths, "ap_weight", annotations=gt)
    _, meta = read_prediction_table(tmp_path / "ens" / "ap_weight.parquet")
    fold0 = meta["folds"][0]
    assert fold0["weight"]["a"]["3"] == pytest.approx(2 / 3, abs=1e-6)
    assert fold0["ap"]["b"]["3"] == pytest.approx(0.5) and fold0["ap"]["a"]["1"] is None


# ---- the logits eval keeps --------------------------------------------------------------

def test_eval_writes_the_table_with_logits(tmp_path, feature_store, detections_file,
                                           labelmap_file):
    import torch

    from pipeline import evaluate, train
    from pipeline.losses import activate

    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    train.run(train.TrainConfig(epochs=1, batch_size=4), feature_store, detections_file, gt,
              labelmap_file, tmp_path / "m.pt")
    pred = tmp_path / "e" / "predictions.csv"
    evaluate.run(evaluate.EvalConfig(), tmp_path / "m.pt", feature_store, detections_file, gt,
                 labelmap_file, tmp_path / "e" / "metrics.json", pred)
    csv = read_predictions(pred)
    assert len(pred.read_text().splitlines()[0].split(",")) == 8     # the AVA result format
    table, meta = read_prediction_table(table_path(pred))
    assert meta["source"] == "eval" and meta["head"] == "linear"
    assert list(table.columns[-2:]) == ["score", "logit"] and len(table) == len(csv)
    np.testing.assert_allclose(table.score, csv.score, rtol=1e-5, atol=1e-6)
    z = torch.tensor(table.logit.to_numpy(np.float32).reshape(-1, LABELMAP.num_classes))
    np.testing.assert_allclose(activate(z, LABELMAP.pose_indices).numpy().reshape(-1),
                               table.score, atol=1e-6)
    # sharded eval: each part keeps its table, and the merge merges them
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"part{i}.csv")
        evaluate.run(evaluate.EvalConfig(), tmp_path / "m.pt", feature_store, detections_file,
                     gt, labelmap_file, tmp_path / "unused.json", parts[-1], shard=(i, 2))
        assert table_path(parts[-1]).is_file()
    evaluate.merge_predictions(parts, tmp_path / "all.csv")
    merged, _ = read_prediction_table(tmp_path / "all.parquet")
    key = ["video_id", "timestamp", "x1", "action_id"]
    pd.testing.assert_frame_equal(
        merged.sort_values(key).reset_index(drop=True),
        table.sort_values(key).reset_index(drop=True), check_dtype=False)


# ---- bad inputs through the CLI ---------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """Three members, a label map, ground truth and a finished ensemble."""
    root = tmp_path_factory.mktemp("ens_good")
    rng = np.random.default_rng(0)
    w = {"lm": root / "lm.pbtxt", "gt": root / "gt.csv"}
    write_labelmap(LABELMAP, w["lm"])
    write_annotations(boxes_gt({"va": 1, "vb": 1}), w["gt"])
    for name in ("a", "b", "c"):
        w[name] = member(root, name, {(v, j): list(rng.normal(size=4))
                                      for v in ("va", "vb") for j in (0, 1)})
    w["old"] = member(root, "old", const([0.0] * 4), with_table=False)
    w["params"] = root / "p.yaml"
    w["params"].write_text("ensemble:\n  scheme: mean_logit\n")
    w["out"] = root / "done" / "predictions.csv"
    code, text = acar(ens_args(w, w["out"]))
    assert code == 0, text
    return w


def ens_args(w: dict, out: Path, *extra: str, members=("a", "b", "c")) -> list[str]:
    given = [] if "--predictions" in extra else \
        [x for m in members for x in ("--predictions", f"{m}={w[m]}")]
    params = [] if "--params" in extra else ["--params", str(w["params"])]
    return [*params, "ensemble", *given, "--labelmap", str(w["lm"]), "--out", str(out),
            *extra]


def _text(text: str, name: str):
    def make(w: dict, tmp: Path) -> Path:
        (tmp / name).write_text(text)
        return tmp / name
    return make


def _table(change, name: str = "t.parquet"):
    """Member a's table after ``change`` (a DataFrame -> DataFrame), written raw."""
    def make(w: dict, tmp: Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        df, _ = read_prediction_table(table_path(w["a"]))
        pq.write_table(pa.Table.from_pandas(change(df), preserve_index=False), tmp / name)
        return tmp / name
    return make


def _under_a_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile" / "p.csv"


def _pred(name: str, path) -> list:
    return ["--predictions", lambda w, t: f"{name}={path(w, t) if callable(path) else w[path]}"]


ENSEMBLE_CASES = [
    ("one-member", ["--predictions", lambda w, t: f"a={w['a']}"], "at least 2 members"),
    ("name-twice", [*_pred("a", "a"), *_pred("a", "b")], "'a' given twice"),
    ("member-missing", [*_pred("a", "a"), "--predictions", lambda w, t: f"b={t}/nope.parquet"],
     "nope.parquet"),
    ("member-not-parquet", [*_pred("a", "a"), *_pred("b", _text("x", "b.parquet"))],
     "b.parquet: not a readable Parquet"),
    ("member-empty-csv", [*_pred("a", "a"), *_pred("b", _text("", "b.csv"))], "b.csv"),
    ("member-no-score", [*_pred("a", "a"), *_pred("b", _table(lambda d: d.drop(
        columns="score")))], "t.parquet: not a prediction table: no column score"),
    ("member-nan-logit", [*_pred("a", "a"), *_pred("b", _table(lambda d: d.assign(
        logit=np.where(d.index == 3, np.nan, d.logit))))], "column 'logit' has 1 empty values"),
    ("member-inf-logit", [*_pred("a", "a"), *_pred("b", _table(lambda d: d.assign(
        logit=np.where(d.index == 3, np.inf, d.logit))))], "t.parquet: row 3: non-finite logit"),
    ("member-score-above-1", [*_pred("a", "a"), *_pred("b", _table(lambda d: d.assign(
        score=d.score + 2)))], "t.parquet: row 0: score must be in [0, 1]"),
    ("member-string-timestamp", [*_pred("a", "a"), *_pred("b", _table(lambda d: d.assign(
        timestamp="noon")))], "column 'timestamp' is large_string, expected int32"),
    ("member-other-boxes", [*_pred("a", "a"), *_pred("b", _table(lambda d: d.assign(
        y2=d.y2 - 0.1)))], "not the same boxes"),
    ("old-file-for-logits", [*_pred("a", "a"), *_pred("old", "old")], "no logits"),
    ("scheme-unknown", ["--scheme", "vote"], "--scheme: ensemble.scheme must be one of"),
    ("topk-zero", ["--scheme", "topk_logit", "--topk", "0"], "ensemble.topk must be >= 1"),
    ("topk-too-big", ["--scheme", "topk_logit", "--topk", "4"], "more than the 3 members"),
    ("folds-one", ["--scheme", "ap_weight", "--folds", "1"], "ensemble.folds must be >= 2"),
    ("ap-weight-without-annotations", ["--scheme", "ap_weight"], "--annotations"),
    ("params-bad-scheme", ["--params", _text("ensemble:\n  scheme: max\n", "p.yaml")],
     "p.yaml: ensemble.scheme must be one of"),
    ("params-unknown-key", ["--params", _text("ensemble:\n  k: 2\n", "p.yaml")],
     "unknown key 'k'"),
    ("labelmap-garbage", ["--labelmap", _text("item {\n  name: 'x'\n", "lm.pbtxt")],
     "lm.pbtxt"),
    ("labelmap-other-classes", ["--labelmap", _text("item {\n  name: 'a'\n  id: 7\n}\n",
                                                    "lm.pbtxt")], "not in the label map"),
    ("out-under-a-file", ["--out", lambda w, t: _under_a_file(t)], "afile"),
]


@pytest.mark.parametrize("flags, must", [c[1:] for c in ENSEMBLE_CASES],
                         ids=[c[0] for c in ENSEMBLE_CASES])
def test_bad_input_is_one_error_line_and_nothing_written(good, tmp_path, flags, must):
    folder = tmp_path / "done"
    shutil.copytree(good["out"].parent, folder)
    out = folder / "predictions.csv"
    flags = _realise(flags, good, tmp_path)
    if "--out" in flags:
        out = Path(flags[flags.index("--out") + 1])
        flags = flags[:flags.index("--out")] + flags[flags.index("--out") + 2:]
    before = snapshot(out.parent)
    code, text = acar(ens_args(good, out, *flags))
    _check(code, text, must, before, out.parent)


def test_cli_runs_every_scheme(good, tmp_path):
    for scheme in ensemble.SCHEMES:
        out = tmp_path / scheme / "predictions.csv"
        code, text = acar(ens_args(good, out, "--scheme", scheme, "--annotations",
                                   str(good["gt"])))
        assert code == 0, text
        assert f"{scheme}" in text and "3 members (a, b, c)" in text
        assert len(read_predictions(out)) == 4 * LABELMAP.num_classes
        code, text = acar(["eval", "--predictions", str(out), "--annotations", str(good["gt"]),
                           "--labelmap", str(good["lm"]), "--out", str(tmp_path / scheme /
                                                                     "metrics.json")])
        assert code == 0, text
