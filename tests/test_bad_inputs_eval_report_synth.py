"""A catalogue of bad inputs to `acar eval`, `report`, `synth`, `viz`, `demo` and `classify`
(issue 19, "beyond the list"; train, bank, detect and extract have theirs).

Each case runs the CLI on a tiny good world with one thing wrong and asserts, as the other
catalogues do (their helpers are reused): a non-zero exit; exactly one ``error:`` line,
naming the file or parameter at fault; no traceback; and the output path as it was before
(absent, or the previous finished output byte for byte: nothing lost).  The cases cover
what crosses into these stages: predictions CSVs (NaN, inf, strings, out-of-range scores
and boxes, duplicate rows, unknown videos, keyframes or classes), excluded-timestamps
files, annotations, label maps, metrics files, checkpoints (unfinished, another kind,
another feature spec), feature stores and banks, empty inputs, unwritable outputs and
every setting (flags and the params file).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.predictions import read_predictions
from tests.conftest import boxes_gt
from tests.test_bad_inputs_train_bank import (  # noqa: F401  (good: a fixture)
    VIDEOS,
    _check,
    _realise,
    acar,
    bank_args,
    good,
    head_checkpoint,
    mismatched_weights,
    nan_store,
    other_features,
    params_file,
    partial_of,
    snapshot,
    text_file,
    train_args,
    wide_features,
)


def eval_model_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    return ["--params", str(params or w["params"]), "eval", "--model", str(w["model"]),
            "--features", str(w["features"]), "--detections", str(w["dets"]),
            "--annotations", str(w["gt"]), "--labelmap", str(w["labelmap"]),
            "--out", str(out), *extra]


def eval_pred_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    return ["--params", str(params or w["params"]), "eval", "--predictions", str(w["pred"]),
            "--annotations", str(w["gt"]), "--labelmap", str(w["labelmap"]),
            "--out", str(out), *extra]


def report_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    metrics = [] if "--metrics" in extra else ["--metrics", f"linear={w['metrics']}",
                                               "--metrics", f"acar={w['metrics']}"]
    return ["--params", str(params or w["params"]), "report", *metrics, "--annotations",
            str(w["gt"]), "--labelmap", str(w["labelmap"]), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def world(request, tmp_path_factory) -> dict[str, Path]:
    """The train/bank catalogue's ``good`` world (features, detections, annotations, label
    map, linear and acar models, an lfb bank), a finished eval (metrics.json +
    predictions.csv), an lfb model and a finished report."""
    w = dict(request.getfixturevalue("good"))
    root = tmp_path_factory.mktemp("eval_good")
    w["eval"] = root / "eval"
    code, out = acar(eval_model_args(w, w["eval"] / "metrics.json"))
    assert code == 0, out
    w["metrics"], w["pred"] = w["eval"] / "metrics.json", w["eval"] / "predictions.csv"
    w["lfb_model"] = root / "lfb.pt"
    code, out = acar(train_args(w, w["lfb_model"], "--head", "lfb", "--bank", str(w["bank"])))
    assert code == 0, out
    w["report"] = root / "report"
    code, out = acar(report_args(w, w["report"]))
    assert code == 0, out
    return w


# ---- makers of bad files: (world, tmp) -> path ------------------------------------------

def predictions(change: Callable[[pd.DataFrame], pd.DataFrame], name: str = "p.csv"
                ) -> Callable[[dict, Path], Path]:
    """The good predictions after ``change``, written raw (as another tool might)."""
    def make(w: dict, tmp: Path) -> Path:
        df = change(read_predictions(w["pred"]).copy())
        df.to_csv(tmp / name, header=False, index=False)
        return tmp / name
    return make


def cell(col: str, value, row: int = 0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        if isinstance(value, str):
            df[col] = df[col].astype(object)
        df.loc[row, col] = value
        return df
    return change


def pred_lines(text: str, name: str = "p.csv") -> Callable[[dict, Path], Path]:
    """The good predictions with ``text`` appended."""
    def make(w: dict, tmp: Path) -> Path:
        (tmp / name).write_text(w["pred"].read_text() + text)
        return tmp / name
    return make


def annotations_of(videos: dict[str, int], name: str = "gt.csv") -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        write_annotations(boxes_gt(videos), tmp / name)
        return tmp / name
    return make


def metrics_file(change: Callable[[dict], dict] | str) -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        path = tmp / "m.json"
        if isinstance(change, str):
            path.write_text(change)
        else:
            path.write_text(json.dumps(change(json.loads(w["metrics"].read_text()))))
        return path
    return make


def with_key(key: str, value) -> Callable[[dict], dict]:
    def change(m: dict) -> dict:
        node = m
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
        return m
    return change


def _every_keyframe(w: dict, tmp: Path) -> Path:
    """An excluded-timestamps file that lists every annotated keyframe."""
    from pipeline.artifacts.annotations import read_annotations, write_excluded

    gt = read_annotations(w["gt"])
    write_excluded(gt[["video_id", "timestamp"]].drop_duplicates(), tmp / "e.csv")
    return tmp / "e.csv"


def good_file(key: str) -> Callable[[dict, Path], Path]:
    return lambda w, tmp: w[key]


def a_file(w: dict, tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def under_a_file(name: str) -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        (tmp / "afile").write_text("x")
        return tmp / "afile" / name
    return make


# ---- eval --model: (id, flags, what the error line must contain) ----------------------

EVAL_MODEL_CASES = [
    ("model-not-a-checkpoint", ["--model", text_file("x", "m.pt")], "not a readable checkpoint"),
    ("model-unfinished", ["--model", partial_of("model")], "--resume"),
    ("model-weights-mismatch", ["--model", mismatched_weights], "its weights do not fit"),
    ("model-short-side", ["--features", other_features], "short_side 36 != 80"),
    ("model-channels", ["--features", wide_features], "channels 8 != 16"),
    ("features-nan", ["--features", nan_store], "non-finite scores"),
    ("features-missing", ["--features", lambda w, t: t / "nope.zarr"], "nope.zarr"),
    ("features-a-bank", ["--features", good_file("bank")], "lfb.zarr"),
    ("labelmap-other", ["--labelmap", text_file("item {\n  name: 'a'\n  id: 7\n}\n",
                                                "lm.pbtxt")], "lm.pbtxt"),
    ("labelmap-garbage", ["--labelmap", text_file("item {\n  name: 'x'\n", "lm.pbtxt")],
     "lm.pbtxt"),
    ("annotations-other-videos", ["--annotations", annotations_of({"vid_x": 2})],
     "none of its videos are in the feature store"),
    ("annotations-garbage", ["--annotations", text_file("a,b\n1,2\n", "a.csv")], "a.csv"),
    ("annotations-empty", ["--annotations", text_file("", "a.csv")], "a.csv"),
    ("detections-not-parquet", ["--detections", text_file("x", "d.parquet")],
     "not a readable Parquet"),
    ("excluded-garbage", ["--excluded", text_file("v,1,2,3\n", "e.csv")], "e.csv"),
    ("excluded-fraction", ["--excluded", text_file("vid_a,1.5\n", "e.csv")], "e.csv"),
    ("bank-head-without-bank", ["--model", good_file("lfb_model")], "--bank"),
    ("bank-for-a-plain-head", ["--bank", good_file("bank")], "--bank"),
    ("bank-not-a-store", ["--model", good_file("lfb_model"), "--bank",
                          lambda w, t: t / "nope.zarr"], "nope.zarr"),
    ("bank-a-features-store", ["--model", good_file("lfb_model"), "--bank",
                               good_file("features")], "f.zarr"),
    ("det-score-thr-in-file", ["--params", params_file("eval:\n  det_score_thr: 1.5\n")],
     "eval.det_score_thr must be <= 1, got 1.5"),
    ("batch-size-in-file", ["--params", params_file("eval:\n  batch_size: 0\n")],
     "eval.batch_size must be >= 1, got 0"),
    ("unknown-key", ["--params", params_file("eval:\n  threshold: 0.5\n")],
     "unknown key 'threshold'"),
    ("no-detection-scores-enough", ["--params", params_file("eval:\n  det_score_thr: 0.99\n")],
     "det_score_thr"),
    ("mode-unknown", ["--mode", "voc"], "--mode"),
    ("mode-2020-with-excluded", ["--mode", "official-2020", "--excluded",
                                 text_file("vid_a,1\n", "e.csv")], "e.csv"),
    ("action-thr-nan", ["--action-thr", "nan"], "--action-thr"),
    ("action-thr-too-big", ["--action-thr", "1.5"], "--action-thr"),
    ("shard-out-of-range", ["--shard", "2/2", "--predictions-out", "part.csv"], "--shard"),
    ("shard-without-predictions-out", ["--shard", "0/2"], "--predictions-out"),
    ("out-under-a-file", ["--out", under_a_file("metrics.json")], "afile"),
    ("predictions-out-under-a-file", ["--predictions-out", under_a_file("p.csv")], "afile"),
    ("plots-dir-a-file", ["--plots-dir", a_file], "afile"),
    ("compare-modes-with-model", ["--compare-modes"], "--compare-modes"),
]

# ---- eval --predictions ---------------------------------------------------------------

EVAL_PRED_CASES = [
    ("score-empty", ["--predictions", predictions(cell("score", float("nan")))],
     "p.csv:1: empty value in column 'score'"),
    ("score-nan", ["--predictions", pred_lines("vid_a,0001,0.1,0.2,0.3,0.4,1,nan\n")],
     "score is not a number"),
    ("score-inf", ["--predictions", predictions(cell("score", float("inf")))], "p.csv:1"),
    ("score-string", ["--predictions", predictions(cell("score", "high"))], "p.csv:1"),
    ("score-above-1", ["--predictions", predictions(cell("score", 7.0, 3))], "p.csv:4"),
    ("score-negative", ["--predictions", predictions(cell("score", -0.5, 2))], "p.csv:3"),
    ("box-nan", ["--predictions", predictions(cell("x1", float("nan"), 1))], "p.csv:2"),
    ("box-string", ["--predictions", predictions(cell("y2", "top", 1))], "p.csv:2"),
    ("box-out-of-range", ["--predictions", predictions(cell("x2", 1.7, 4))], "p.csv:5"),
    ("box-in-pixels", ["--predictions", predictions(
        lambda df: df.assign(x1=df.x1 * 64, x2=df.x2 * 64))], "p.csv:1"),
    ("box-inverted-mmaction2", ["--mode", "mmaction2", "--predictions", predictions(
        cell("x1", 0.99, 0))], "p.csv"),
    ("timestamp-fraction", ["--predictions", predictions(cell("timestamp", "1.5"))],
     "p.csv:1"),
    ("action-id-string", ["--predictions", predictions(cell("action_id", "sit"))], "p.csv:1"),
    ("seven-columns", ["--predictions", pred_lines("vid_a,0001,0.1,0.2,0.3,0.4,1\n")],
     "columns"),
    ("nine-columns", ["--predictions", pred_lines("vid_a,0001,0.1,0.2,0.3,0.4,1,0.5,0\n")],
     "columns"),
    ("empty-video-id", ["--predictions", pred_lines(",0001,0.1,0.2,0.3,0.4,1,0.5\n")],
     "video_id"),
    ("duplicate-rows", ["--predictions", predictions(lambda df: pd.concat([df, df.iloc[:3]]))],
     "duplicate"),
    ("empty-predictions", ["--predictions", text_file("", "p.csv")], "p.csv"),
    ("blank-predictions", ["--predictions", text_file("\n\n", "p.csv")], "p.csv"),
    ("binary-predictions", ["--predictions", text_file("\x00\xff\xfe", "p.csv")], "p.csv"),
    ("unknown-videos", ["--predictions", predictions(
        lambda df: df.assign(video_id="other_" + df.video_id))], "p.csv"),
    ("other-keyframes", ["--predictions", predictions(
        lambda df: df.assign(timestamp=df.timestamp + 900))], "p.csv"),
    ("no-label-map-class", ["--predictions", predictions(
        lambda df: df.assign(action_id=df.action_id + 100))], "p.csv"),
    ("annotations-garbage", ["--annotations", text_file("a,b\n1,2\n", "a.csv")], "a.csv"),
    ("annotations-empty", ["--annotations", text_file("", "a.csv")], "a.csv"),
    ("annotations-box-out-of-range", ["--annotations", text_file(
        "vid_a,0001,0.1,0.2,1.5,0.9,1,0\n", "a.csv")], "a.csv:1"),
    ("annotations-no-label-map-class", ["--annotations", text_file(
        "vid_a,0001,0.1,0.2,0.5,0.9,99,0\n", "a.csv")], "a.csv"),
    ("labelmap-garbage", ["--labelmap", text_file("item {\n  name: 'x'\n", "lm.pbtxt")],
     "lm.pbtxt"),
    ("labelmap-empty", ["--labelmap", text_file("", "lm.pbtxt")], "lm.pbtxt"),
    ("excluded-garbage", ["--excluded", text_file("v,1,2,3\n", "e.csv")], "e.csv"),
    ("excluded-string-timestamp", ["--excluded", text_file("vid_a,noon\n", "e.csv")],
     "e.csv:1"),
    ("excluded-every-keyframe", ["--excluded", lambda w, t: _every_keyframe(w, t)],
     "nothing to score"),
    ("merge-without-predictions-out", ["--predictions", good_file("pred"), "--predictions",
                                       good_file("pred")], "--predictions-out"),
    ("merge-same-part-twice", ["--predictions", good_file("pred"), "--predictions",
                               good_file("pred"), "--predictions-out",
                               lambda w, t: t / "merged.csv"], "predictions.csv"),
    ("mode-2020-with-excluded", ["--mode", "official-2020", "--excluded",
                                 text_file("vid_a,1\n", "e.csv")], "e.csv"),
    ("action-thr-nan", ["--action-thr", "nan"], "--action-thr"),
    ("out-under-a-file", ["--out", under_a_file("metrics.json")], "afile"),
]


def _eval_run(args_of: Callable, w: dict, tmp: Path, flags: list) -> tuple:
    """Run over a copy of the finished eval folder (metrics.json + predictions.csv): a failed
    run must leave both as they were."""
    folder = tmp / "eval"
    shutil.copytree(w["eval"], folder)
    out = folder / "metrics.json"
    flags = _realise(flags, w, tmp)
    params = None
    if "--params" in flags:
        k = flags.index("--params")
        params, flags = Path(flags[k + 1]), flags[:k] + flags[k + 2:]
    watched = folder
    if "--out" in flags:
        k = flags.index("--out")
        out = Path(flags.pop(k + 1))
        flags.pop(k)
        watched = out if out.parent.exists() and not out.parent.is_file() else out.parent
    if "--predictions" in flags:      # this run's files replace the good one
        k = flags.index("--predictions")
        w = {**w, "pred": Path(flags.pop(k + 1))}
        flags.pop(k)
    if "--model" in flags:
        k = flags.index("--model")
        w = {**w, "model": Path(flags.pop(k + 1))}
        flags.pop(k)
    before = {"out": snapshot(watched), "folder": snapshot(folder)}
    code, text = acar(args_of(w, out, *flags, params=params))
    return code, text, before, watched, folder


@pytest.mark.parametrize("flags,must", [c[1:] for c in EVAL_MODEL_CASES],
                         ids=[c[0] for c in EVAL_MODEL_CASES])
def test_bad_eval_model_input(world, tmp_path, flags, must):
    code, text, before, watched, folder = _eval_run(eval_model_args, world, tmp_path, flags)
    _check(code, text, must, before["out"], watched)
    assert snapshot(folder) == before["folder"]


@pytest.mark.parametrize("flags,must", [c[1:] for c in EVAL_PRED_CASES],
                         ids=[c[0] for c in EVAL_PRED_CASES])
def test_bad_eval_predictions_input(world, tmp_path, flags, must):
    code, text, before, watched, folder = _eval_run(eval_pred_args, world, tmp_path, flags)
    _check(code, text, must, before["out"], watched)
    assert snapshot(folder) == before["folder"]


# ---- report: the metrics of two heads, the annotations, the label map -> report/ --------

REPORT_CASES = [
    ("metrics-missing", ["--metrics", "linear=nope.json"], "nope.json: metrics file not found"),
    ("metrics-not-json", ["--metrics", metrics_file("{")], "invalid JSON"),
    ("metrics-not-an-object", ["--metrics", metrics_file("[1]")], "must be a JSON object"),
    ("metrics-map-string", ["--metrics", metrics_file(with_key("mAP", "high"))], "'mAP'"),
    ("metrics-map-above-1", ["--metrics", metrics_file(with_key("mAP", 55.3))], "'mAP'"),
    ("metrics-map-nan", ["--metrics", metrics_file('{"mAP": NaN, "per_class": {}, '
                                                   '"per_superclass": {}}')], "'mAP'"),
    ("metrics-superclass-negative", ["--metrics", metrics_file(
        with_key("per_superclass.pose", -0.2))], "per_superclass 'pose'"),
    ("metrics-superclass-missing", ["--metrics", metrics_file(
        lambda m: {k: v for k, v in m.items() if k != "per_superclass"})], "'per_superclass'"),
    ("metrics-other-labelmap", ["--metrics", metrics_file(with_key("per_class", {
        "77": {"name": "fly", "ap": 0.5, "num_gt": 3}}))], "label map"),
    ("metrics-not-head-path", ["--metrics", "linear"], "HEAD=PATH"),
    ("metrics-head-twice", ["--metrics", "a=x.json", "--metrics", "a=y.json"], "twice"),
    ("annotations-garbage", ["--annotations", text_file("a,b\n1,2\n", "a.csv")], "a.csv"),
    ("annotations-empty", ["--annotations", text_file("", "a.csv")], "a.csv"),
    ("labelmap-garbage", ["--labelmap", text_file("item {\n  name: 'x'\n", "lm.pbtxt")],
     "lm.pbtxt"),
    ("families-unknown", ["--families", "pose,flying"], "flying"),
    ("families-not-a-list", ["--params", params_file("report:\n  families: pose\n")],
     "report.families"),
    ("family-names-not-a-mapping", ["--params", params_file("report:\n  family_names: [a]\n")],
     "report.family_names"),
    ("unknown-key", ["--params", params_file("report:\n  colour: red\n")], "unknown key"),
    ("out-under-a-file", ["--out", under_a_file("report")], "afile"),
]


def _metrics_flags(flags: list) -> list:
    """A made metrics file is one head's (``acar=``), beside the good ``linear``."""
    out = []
    for i, f in enumerate(flags):
        if i and flags[i - 1] == "--metrics" and callable(f):
            out += [lambda w, t, f=f: "acar=" + str(f(w, t))]
        else:
            out.append(f)
    if "--metrics" in flags and any(callable(f) for f in flags):
        out = ["--metrics", lambda w, t: f"linear={w['metrics']}", *out]
    return out


@pytest.mark.parametrize("flags,must", [c[1:] for c in REPORT_CASES],
                         ids=[c[0] for c in REPORT_CASES])
def test_bad_report_input(world, tmp_path, flags, must):
    code, text, before, out = _stage_run(report_args, world, tmp_path, _metrics_flags(flags),
                                         world["report"])
    _check(code, text, must, before, out)


def _stage_run(args_of: Callable, w: dict, tmp: Path, flags: list, previous: Path | None
               ) -> tuple:
    """Run with ``flags`` (a --params among them replaces the tiny params) over a copy of
    the ``previous`` good output (None: no output yet)."""
    out = tmp / (previous.name if previous is not None else "out")
    if previous is not None:
        (shutil.copytree if previous.is_dir() else shutil.copy)(previous, out)
    flags = _realise(flags, w, tmp)
    params = None
    if "--params" in flags:
        k = flags.index("--params")
        params, flags = Path(flags[k + 1]), flags[:k] + flags[k + 2:]
    if "--out" in flags:
        k = flags.index("--out")
        out = Path(flags.pop(k + 1))
        flags.pop(k)
    watched = out if not out.parent.is_file() else out.parent
    before = snapshot(watched)
    code, text = acar(args_of(w, out, *flags, params=params))
    return code, text, before, watched


# ---- synth: the world's settings -> a world folder ----------------------------------------

SYNTH_TINY = ("synth:\n  num_train: 1\n  num_val: 1\n  duration: 2\n  fps: 4\n  width: 96\n"
              "  height: 64\n")


def synth_params(text: str) -> Callable[[dict, Path], Path]:
    return text_file(_merge_synth(text), "stages.yaml")


def _merge_synth(text: str) -> str:
    """The tiny synth section with ``text``'s keys (``  key: value`` lines) replaced."""
    keys = {ln.split(":")[0] for ln in text.splitlines()}
    lines = [ln for ln in SYNTH_TINY.splitlines() if ln.split(":")[0] not in keys]
    return "\n".join(lines) + "\n" + text


def synth_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    return ["--params", str(params or w["synth_params"]), "synth", "--out", str(out), *extra]


SYNTH_CASES = [
    ("seed-negative", ["--seed", "-1"], "--seed: synth.seed must be >= 0, got -1"),
    ("seed-not-an-integer", ["--seed", "x"], "--seed"),
    ("num-train-0", ["--params", synth_params("  num_train: 0\n")],
     "synth.num_train must be >= 1, got 0"),
    ("duration-0", ["--params", synth_params("  duration: 0\n")],
     "synth.duration must be >= 2, got 0"),
    ("duration-1-no-keyframe", ["--params", synth_params("  duration: 1\n")],
     "synth.duration must be >= 2, got 1"),
    ("fps-0", ["--params", synth_params("  fps: 0\n")], "synth.fps must be >= 1, got 0"),
    ("fps-float", ["--params", synth_params("  fps: 7.5\n")], "synth.fps must be an integer"),
    ("width-tiny", ["--params", synth_params("  width: 4\n")], "synth.width must be >= 8"),
    ("width-odd", ["--params", synth_params("  width: 97\n")], "synth.width: must be even"),
    ("height-odd", ["--params", synth_params("  height: 63\n")], "synth.height: must be even"),
    ("width-a-bool", ["--params", synth_params("  width: true\n")], "synth.width must be"),
    ("max-people-0", ["--params", synth_params("  max_people: 0\n")],
     "synth.max_people must be >= 1"),
    ("label-noise-above-1", ["--params", synth_params("  label_noise: 1.5\n")],
     "synth.label_noise must be <= 1"),
    ("label-noise-nan", ["--params", synth_params("  label_noise: .nan\n")],
     "synth.label_noise must be a finite number"),
    ("unknown-key", ["--params", synth_params("  videos: 3\n")], "unknown key 'videos'"),
    ("out-under-a-file", ["--out", under_a_file("world")], "afile"),
]


@pytest.fixture(scope="module")
def synth_good(world, tmp_path_factory) -> dict:
    """A finished tiny world made by `acar synth` (the previous output)."""
    w = dict(world)
    root = tmp_path_factory.mktemp("synth_good")
    w["synth_params"] = root / "stages.yaml"
    w["synth_params"].write_text(SYNTH_TINY)
    w["world"] = root / "world"
    code, out = acar(synth_args(w, w["world"]))
    assert code == 0, out
    return w


@pytest.mark.parametrize("flags,must", [c[1:] for c in SYNTH_CASES],
                         ids=[c[0] for c in SYNTH_CASES])
def test_bad_synth_input(synth_good, tmp_path, flags, must):
    code, text, before, out = _stage_run(synth_args, synth_good, tmp_path, flags,
                                         synth_good["world"])
    _check(code, text, must, before, out)


# ---- viz: predictions over their videos -> OUT/<video>_actions.mp4 ------------------------

def viz_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    pred = [] if "--predictions" in extra else ["--predictions", str(w["viz_pred"])]
    videos = [] if "--videos" in extra else ["--videos", str(w["videos"])]
    return ["--params", str(params or w["params"]), "viz", *pred, *videos, "--out", str(out),
            *extra]


def viz_predictions(change: Callable[[pd.DataFrame], pd.DataFrame]
                    ) -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        change(read_predictions(w["viz_pred"]).copy()).to_csv(tmp / "p.csv", header=False,
                                                               index=False)
        return tmp / "p.csv"
    return make


def videos_folder(layout: dict[str, bytes | str]) -> Callable[[dict, Path], Path]:
    """A videos folder: name -> bytes, or the name of a world video to link."""
    def make(w: dict, tmp: Path) -> Path:
        folder = tmp / "videos"
        folder.mkdir()
        for name, data in layout.items():
            if isinstance(data, str):
                (folder / name).symlink_to(w["videos"] / data)
            else:
                (folder / name).write_bytes(data)
        return folder
    return make


VIZ_CASES = [
    ("predictions-garbage", ["--predictions", text_file("a,b\n", "p.csv")], "p.csv"),
    ("predictions-empty", ["--predictions", text_file("", "p.csv")], "p.csv"),
    ("predictions-box-nan", ["--predictions", viz_predictions(cell("x1", float("nan"), 1))],
     "p.csv:2"),
    ("predictions-box-in-pixels", ["--predictions", viz_predictions(
        lambda df: df.assign(x2=df.x2 * 96))], "p.csv:1"),
    ("predictions-score-inf", ["--predictions", viz_predictions(cell("score", float("inf")))],
     "p.csv:1"),
    ("predictions-other-videos", ["--predictions", viz_predictions(
        lambda df: df.assign(video_id="x" + df.video_id))], "p.csv"),
    ("videos-empty-folder", ["--videos", videos_folder({})], "videos"),
    ("video-not-a-video", ["--videos", videos_folder({"train_000.mp4": b"not a video"})],
     "train_000.mp4"),
    ("annotations-garbage", ["--annotations", text_file("a,b\n", "a.csv")], "a.csv"),
    ("labelmap-garbage", ["--labelmap", text_file("item {\n  name: 'x'\n", "lm.pbtxt")],
     "lm.pbtxt"),
    ("threshold-too-big", ["--action-score-thr", "1.5"],
     "--action-score-thr: viz.action_score_thr must be <= 1"),
    ("threshold-nan", ["--action-score-thr", "nan"],
     "viz.action_score_thr must be a finite number"),
    ("top-k-0", ["--top-k", "0"], "--top-k: viz.top_k must be >= 1, got 0"),
    ("chunk-0", ["--params", params_file("viz:\n  chunk: 0\n")], "viz.chunk must be >= 1"),
    ("text-scale-0", ["--params", params_file("viz:\n  text_scale: 0\n")],
     "viz.text_scale must be > 0"),
    ("unknown-key", ["--params", params_file("viz:\n  colour: red\n")], "unknown key"),
    ("out-under-a-file", ["--out", under_a_file("viz")], "afile"),
]


@pytest.fixture(scope="module")
def viz_good(world, synth_world, tmp_path_factory) -> dict:
    """Predictions (the GT boxes of train_000, score 0.9) and their finished render."""
    from pipeline.artifacts.annotations import read_annotations
    from pipeline.artifacts.predictions import write_predictions

    w = dict(world)
    root = tmp_path_factory.mktemp("viz_good")
    w["videos"] = synth_world / "videos"
    gt = read_annotations(synth_world / "train.csv")
    w["viz_pred"] = root / "pred.csv"
    write_predictions(gt[gt.video_id == "train_000"].assign(score=0.9), w["viz_pred"])
    w["viz"] = root / "viz"
    code, out = acar(viz_args(w, w["viz"]))
    assert code == 0, out
    assert [p.name for p in w["viz"].iterdir()] == ["train_000_actions.mp4"]
    return w


@pytest.mark.parametrize("flags,must", [c[1:] for c in VIZ_CASES],
                         ids=[c[0] for c in VIZ_CASES])
def test_bad_viz_input(viz_good, tmp_path, flags, must):
    code, text, before, out = _stage_run(viz_args, viz_good, tmp_path, flags, viz_good["viz"])
    _check(code, text, must, before, out)


# ---- demo: a video and a checkpoint -> OUT/predictions.csv, OUT/<name>_actions.mp4 ---------

def demo_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    video = [] if extra and not str(extra[0]).startswith("-") else [str(w["clip"])]
    model = [] if "--model" in extra else ["--model", str(w["demo_model"])]
    return ["--params", str(params or w["params"]), "demo", *video, *model, "--out", str(out),
            *extra]


def demo_checkpoint(head: str) -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        from tests.test_demo import _checkpoint

        return _checkpoint(tmp / f"{head}.pt", head)
    return make


def demo_gt(rows: str) -> Callable[[dict, Path], Path]:
    return text_file(rows, "gt.csv")


CLIP_BOX = "clip,0001,0.1,0.2,0.5,0.9,1,0\n"

DEMO_CASES = [
    ("video-missing", [lambda w, t: t / "nope.mp4", "--detector", "gt", "--annotations",
                       good_file("clip_gt")], "nope.mp4"),
    ("video-not-a-video", [text_file("junk", "clip.mp4"), "--detector", "gt", "--annotations",
                           good_file("clip_gt")], "clip.mp4: cannot decode video"),
    ("model-missing", ["--model", lambda w, t: t / "nope.pt"], "nope.pt"),
    ("model-not-a-checkpoint", ["--model", text_file("x", "m.pt")], "not a readable checkpoint"),
    ("model-unfinished", ["--model", partial_of("acar")], "--resume"),
    ("model-weights-mismatch", ["--model", mismatched_weights], "its weights do not fit"),
    ("model-weights-file-without-backbone-weights", ["--model", lambda w, t: _spec_checkpoint(
        w, t, weights="file:r3d.pt:0123456789abcdef", random_init=False)],
     "pass --backbone-weights"),
    ("acfb-without-bank-model", ["--model", demo_checkpoint("acfb"), "--detector", "gt",
                                 "--annotations", good_file("clip_gt")], "--bank-model"),
    ("gt-without-annotations", ["--detector", "gt"], "--annotations"),
    ("gt-annotations-of-other-videos", ["--detector", "gt", "--annotations",
                                        demo_gt(CLIP_BOX.replace("clip", "other"))],
     "no boxes for video 'clip'"),
    ("gt-annotations-garbage", ["--detector", "gt", "--annotations", demo_gt("a,b\n")],
     "gt.csv"),
    ("gt-annotations-inverted-box", ["--detector", "gt", "--annotations",
                                     demo_gt("clip,0001,0.6,0.2,0.5,0.9,1,0\n")], "gt.csv:1"),
    ("detector-unknown", ["--detector", "rcnn"], "--detector"),
    ("det-threshold-too-big", ["--det-score-thr", "1.5"],
     "--det-score-thr: demo.det_score_thr must be <= 1"),
    ("threshold-nan", ["--action-score-thr", "nan"],
     "demo.action_score_thr must be a finite number"),
    ("top-k-0", ["--top-k", "0"], "--top-k: demo.top_k must be >= 1, got 0"),
    ("keyframe-interval-0", ["--keyframe-interval", "0"], "demo.keyframe_interval must be >= 1"),
    ("classes-not-integers", ["--classes", "person"], "person"),
    ("classes-negative", ["--classes", "-1"], "demo.classes items must be >= 0"),
    ("unknown-key", ["--params", params_file("demo:\n  colour: red\n")], "unknown key"),
    ("out-under-a-file", ["--out", under_a_file("demo"), "--detector", "gt", "--annotations",
                          good_file("clip_gt")], "afile"),
]


def _spec_checkpoint(w: dict, tmp: Path, **spec) -> Path:
    from pipeline.artifacts.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(w["demo_model"])
    save_checkpoint({**ckpt, "feature_spec": {**ckpt["feature_spec"], **spec}}, tmp / "s.pt")
    return tmp / "s.pt"


@pytest.fixture(scope="module")
def demo_good(world, tmp_path_factory) -> dict:
    """The demo's video, its boxes, a linear checkpoint on r3d_18 features (tests/test_demo)
    and a previous demo output (stand-in files: only their bytes matter)."""
    from tests.test_demo import _checkpoint, video

    w = dict(world)
    root = tmp_path_factory.mktemp("demo_good")
    w["clip"] = video.__wrapped__(tmp_path_factory)
    w["clip_gt"] = root / "gt.csv"
    w["clip_gt"].write_text(CLIP_BOX)
    w["demo_model"] = _checkpoint(root / "linear.pt", "linear")
    w["demo"] = root / "demo"
    w["demo"].mkdir()
    (w["demo"] / "predictions.csv").write_text("clip,0001,0.1,0.2,0.5,0.9,1,0.5\n")
    (w["demo"] / "clip_actions.mp4").write_bytes(b"an earlier render")
    return w


@pytest.mark.parametrize("flags,must", [c[1:] for c in DEMO_CASES],
                         ids=[c[0] for c in DEMO_CASES])
def test_bad_demo_input(demo_good, tmp_path, flags, must):
    code, text, before, out = _stage_run(demo_args, demo_good, tmp_path, flags,
                                         demo_good["demo"])
    if before is not None and out.name == "demo":   # demo's scratch folder may be new
        snap = snapshot(out)
        assert {k: v for k, v in snap.items() if not k.startswith("work/")} == before, \
            "the output path changed"
        before = snap
    _check(code, text, must, before, out)


# ---- classify: a video and a backbone -> its Kinetics-400 labels (stdout only) ------------

def classify_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    video = [] if extra and not str(extra[0]).startswith("-") else [str(w["clip"])]
    return ["classify", *video, *extra]


CLASSIFY_CASES = [
    ("backbone-unknown", ["--backbone", "nope"], "nope: unknown backbone"),
    ("backbone-without-classifier", ["--backbone", "hoghof"], "hoghof: has no classifier"),
    ("top-0", ["--top", "0"], "--top: must be >= 1, got 0"),
    ("frames-0", ["--frames", "0"], "--frames: must be >= 1, got 0"),
    ("frames-negative", ["--frames", "-3"], "--frames: must be >= 1, got -3"),
    ("short-side-0", ["--short-side", "0"], "--short-side: must be >= 1, got 0"),
    ("crop-0", ["--crop", "0"], "--crop: must be >= 1, got 0"),
    ("times-garbage", ["--times", "x"], "--times"),
    ("times-negative", ["--times", "1,-5"], "--times: -5.0 s is outside the video"),
    ("times-past-the-end", ["--times", "99"], "--times: 99.0 s is outside the video"),
    ("times-nan", ["--times", "nan"], "--times: nan s is outside the video"),
    ("weights-missing-file", ["--weights", "/nonexistent/w.pt"], "/nonexistent/w.pt"),
    ("weights-unknown-name", ["--backbone", "r3d_18", "--weights", "NOPE"], "NOPE"),
    ("video-not-a-video", [text_file("junk", "v.mp4")], "v.mp4: cannot decode video"),
    ("video-missing", [lambda w, t: t / "nope.mp4"], "nope.mp4"),
    ("video-a-folder", [lambda w, t: t], "VIDEO"),
]


@pytest.mark.parametrize("flags,must", [c[1:] for c in CLASSIFY_CASES],
                         ids=[c[0] for c in CLASSIFY_CASES])
def test_bad_classify_input(demo_good, tmp_path, flags, must):
    """Each fails before a network is built (a clip of i3d takes half a minute here)."""
    code, text, before, out = _stage_run(classify_args, demo_good, tmp_path, flags, None)
    _check(code, text, must, before, out)


def test_catalogue_size():
    """Reported in the closing note of issue 19."""
    sizes = {"eval --model": EVAL_MODEL_CASES, "eval --predictions": EVAL_PRED_CASES,
             "report": REPORT_CASES, "synth": SYNTH_CASES, "viz": VIZ_CASES,
             "demo": DEMO_CASES, "classify": CLASSIFY_CASES}
    for name, cases in sizes.items():
        assert len(cases) >= 15, name
        assert len({c[0] for c in cases}) == len(cases), name
