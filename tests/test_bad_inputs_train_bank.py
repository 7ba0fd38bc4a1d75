"""A catalogue of bad inputs to `acar train` and `acar bank` (issue 19, "beyond the list").

Each case runs the CLI (click's CliRunner, an ArtifactError shown as ``acar`` shows it) on
a tiny good world with one thing wrong, and asserts: a non-zero exit; exactly one
``error:`` line, naming the file or parameter at fault; and the output path as it was
before (absent, or the previous finished output byte for byte).  The cases cover what
crosses into these stages: every file they read (features, detections, annotations,
label map, checkpoints, banks, the params file) and every setting (flags and file).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.checkpoint import load_checkpoint, save_checkpoint
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureStore
from pipeline.models import build_head
from tests.conftest import LABELMAP, boxes_gt, make_feature_store

VIDEOS = {"vid_a": 4, "vid_b": 3}
TINY = "train:\n  epochs: 1\n  batch_size: 3\n"


def acar(args: list[str]) -> tuple[int, str]:
    """Exit code and output (stdout + stderr) of ``acar ARGS``, as :func:`cli.main.main`
    shows an :class:`ArtifactError` (``error: ...``, exit 1)."""
    from cli.main import cli

    res = CliRunner().invoke(cli, args)
    if isinstance(res.exception, ArtifactError):
        return 1, res.output + f"error: {res.exception}\n"
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception              # a traceback: the catalogue must not have any
    return res.exit_code, res.output


def snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """A good world, a finished linear model and acar checkpoint, and an lfb bank."""
    root = tmp_path_factory.mktemp("good")
    w = {"root": root, "features": root / "f.zarr", "dets": root / "d.parquet",
         "gt": root / "gt.csv", "labelmap": root / "labelmap.pbtxt",
         "params": root / "tiny.yaml"}
    make_feature_store(str(w["features"]), VIDEOS)
    gt = boxes_gt(VIDEOS)
    write_annotations(gt, w["gt"])
    det = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
    write_detections(det.assign(score=0.95), w["dets"], {"source": "test"})
    from pipeline.artifacts.labelmap import write_labelmap

    write_labelmap(LABELMAP, w["labelmap"])
    w["params"].write_text(TINY)
    w["model"] = root / "m.pt"
    code, out = acar(train_args(w, w["model"]))
    assert code == 0, out
    w["acar"] = root / "acar.pt"
    code, out = acar(train_args(w, w["acar"], "--head", "acar"))
    assert code == 0, out
    w["bank"] = root / "lfb.zarr"
    code, out = acar(bank_args(w, w["bank"]))
    assert code == 0, out
    return w


def train_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    return ["--params", str(params or w["params"]), "train", "--features", str(w["features"]),
            "--detections", str(w["dets"]), "--annotations", str(w["gt"]),
            "--labelmap", str(w["labelmap"]), "--out", str(out), *extra]


def bank_args(w: dict, out: Path, *extra: str, params: Path | None = None) -> list[str]:
    return ["--params", str(params or w["params"]), "bank", "--features", str(w["features"]),
            "--detections", str(w["dets"]), "--out", str(out), *extra]


# ---- makers of bad files: (world, tmp) -> path ------------------------------------------

def text_file(text: str, name: str = "bad.txt") -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        (tmp / name).write_text(text)
        return tmp / name
    return make


def params_file(text: str) -> Callable[[dict, Path], Path]:
    return text_file(TINY + text, "stages.yaml")


def empty_store(w: dict, tmp: Path) -> Path:
    FeatureStore(str(tmp / "empty.zarr"), mode="a")
    return tmp / "empty.zarr"


def nan_store(w: dict, tmp: Path) -> Path:
    url = tmp / "nan.zarr"
    shutil.copytree(w["features"], url)
    store = FeatureStore(str(url), mode="a")
    arr = store.group("vid_b")["s36"]
    row = np.asarray(arr[1])
    row.flat[0] = np.nan
    arr[1] = row
    return url


def other_features(w: dict, tmp: Path) -> Path:
    url = tmp / "other.zarr"
    shutil.copytree(w["features"], url)
    store = FeatureStore(str(url), mode="a")
    for v in store.videos():
        store.group(v).attrs["acar"] = {**store.attrs(v), "short_side": 80}
    return url


def wide_features(w: dict, tmp: Path) -> Path:
    make_feature_store(str(tmp / "wide.zarr"), VIDEOS, channels=16)
    return tmp / "wide.zarr"


def other_videos(w: dict, tmp: Path) -> Path:
    write_annotations(boxes_gt({"vid_x": 2}), tmp / "x.csv")
    return tmp / "x.csv"


def vid_a_only(w: dict, tmp: Path) -> Path:
    write_annotations(boxes_gt({"vid_a": 4}), tmp / "a.csv")
    return tmp / "a.csv"


def partial_of(key: str) -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        ckpt = load_checkpoint(w[key])
        ckpt["train"] = {**ckpt["train"], "complete": False, "epoch": 1}
        save_checkpoint(ckpt, tmp / "run.pt.partial")
        return tmp / "run.pt.partial"
    return make


def head_checkpoint(head: str, **hparams) -> Callable[[dict, Path], Path]:
    def make(w: dict, tmp: Path) -> Path:
        ckpt = load_checkpoint(w["acar"])
        save_checkpoint({**ckpt, "head": head, "hparams": hparams, "state_dict": build_head(
            head, 8, LABELMAP.num_classes, **hparams).state_dict()}, tmp / f"{head}.pt")
        return tmp / f"{head}.pt"
    return make


def mismatched_weights(w: dict, tmp: Path) -> Path:
    ckpt = load_checkpoint(w["acar"])
    ckpt["hparams"] = {**ckpt["hparams"], "hidden_dim": 4}
    save_checkpoint(ckpt, tmp / "mismatch.pt")
    return tmp / "mismatch.pt"


def acar_other_features(w: dict, tmp: Path) -> Path:
    ckpt = load_checkpoint(w["acar"])
    ckpt["feature_spec"] = {**ckpt["feature_spec"], "backbone": "x3d_s"}
    save_checkpoint(ckpt, tmp / "other.pt")
    return tmp / "other.pt"


def good_file(key: str) -> Callable[[dict, Path], Path]:
    return lambda w, tmp: w[key]


# ---- the catalogue: (id, flags (a callable is a bad file made for the case), what the error
# line must contain) ---------------------------------------------------------------------

TRAIN_CASES = [
    ("epochs-0", ["--epochs", "0"], "--epochs: train.epochs must be >= 1, got 0"),
    ("epochs-negative", ["--epochs", "-3"], "--epochs: train.epochs must be >= 1, got -3"),
    ("lr-nan", ["--lr", "nan"], "--lr: train.lr must be a finite number, got nan"),
    ("lr-negative", ["--lr", "-1"], "--lr: train.lr must be > 0"),
    ("lr-inf", ["--lr", "inf"], "--lr: train.lr must be a finite number"),
    ("seed-negative", ["--seed", "-1"], "--seed: train.seed must be >= 0"),
    ("head-unknown", ["--head", "foo"], "--head: unknown head 'foo'"),
    ("batch-size-0", ["--params", params_file("  batch_size: 0\n")],
     "train.batch_size must be >= 1, got 0"),
    ("batch-size-negative", ["--params", params_file("  batch_size: -2\n")],
     "train.batch_size must be >= 1, got -2"),
    ("batch-size-float", ["--params", params_file("  batch_size: 2.5\n")],
     "train.batch_size must be an integer"),
    ("num-workers-negative", ["--params", params_file("  num_workers: -1\n")],
     "train.num_workers must be >= 0"),
    ("momentum-too-big", ["--params", params_file("  momentum: 1.5\n")],
     "train.momentum must be <= 1"),
    ("lr-steps-out-of-range", ["--params", params_file("  lr_steps: [2]\n")],
     "train.lr_steps items must be <= 1"),
    ("cache-unknown", ["--params", params_file("  cache: ram\n")],
     "train.cache must be one of auto, memory, disk"),
    ("nesterov-without-momentum", ["--params", params_file("  momentum: 0\n")],
     "train.momentum must be > 0 with nesterov: true, got 0"),
    ("jitter-negative", ["--params", params_file("  jitter: -0.1\n")],
     "train.jitter must be >= 0"),
    ("unknown-key", ["--params", params_file("  epoch: 3\n")], "unknown key 'epoch'"),
    ("unknown-hparam", ["--params", params_file("heads:\n  linear:\n    hparams: {foo: 1}\n")],
     "unknown hyper-parameter 'foo'"),
    ("head-lr-zero", ["--params", params_file("heads:\n  linear:\n    lr: 0\n")],
     "heads.linear.lr must be > 0"),
    ("other-section-bad", ["--params", params_file("extract:\n  clip_frames: 0\n")],
     "extract.clip_frames must be >= 1, got 0"),
    ("params-not-yaml", ["--params", text_file("train: [1,\n", "p.yaml")], "invalid YAML"),
    ("features-missing", ["--features", lambda w, t: t / "nope.zarr"], "nope.zarr"),
    ("features-empty", ["--features", empty_store], "no complete videos"),
    ("features-a-bank", ["--features", good_file("bank")], "lfb.zarr"),
    ("features-nan", ["--features", nan_store],
     "training loss is nan at epoch 1, step"),
    ("val-features-nan", ["--features", nan_store, "--annotations", vid_a_only,
                          "--val-annotations", good_file("gt")],
     "non-finite scores (NaN or inf features?) at keyframes vid_b@2"),
    ("detections-not-parquet", ["--detections", text_file("x")], "not a readable Parquet"),
    ("annotations-garbage", ["--annotations", text_file("a,b\n1,2\n", "a.csv")], "a.csv"),
    ("annotations-other-videos", ["--annotations", other_videos],
     "no annotated keyframe has features"),
    ("labelmap-garbage", ["--labelmap", text_file("item {\n  name: 'x'\n", "lm.pbtxt")],
     "lm.pbtxt"),
    ("val-annotations-garbage", ["--val-annotations", text_file("zz\n", "v.csv")], "v.csv"),
    ("init-not-a-checkpoint", ["--init", text_file("x", "i.pt")], "not a readable checkpoint"),
    ("init-unfinished", ["--init", partial_of("model")], "--resume"),
    ("init-fits-nothing", ["--init", head_checkpoint("linear", dropout=0.0),
                           "--head", "acar"], "no weight of this checkpoint fits"),
    ("bank-for-a-plain-head", ["--bank", good_file("bank")], "reads no bank; drop --bank"),
    ("bank-head-without-bank", ["--head", "lfb"], "--bank"),
    ("bank-not-a-store", ["--head", "lfb", "--bank", lambda w, t: t / "nope.zarr"],
     "nope.zarr"),
    ("bank-a-features-store", ["--head", "lfb", "--bank", good_file("features")], "f.zarr"),
    ("view-unknown", ["--params", params_file("  view: s99\n")], "s99"),
]

BANK_CASES = [
    ("acfb-without-model", ["--kind", "acfb"], "--model: an acfb bank needs a trained acar"),
    ("acfb-linear-model", ["--kind", "acfb", "--model", head_checkpoint("linear")],
     "a 'linear' checkpoint: an acfb bank holds the first-order maps of a trained acar"),
    ("acfb-acfb-model", ["--kind", "acfb", "--model",
                         head_checkpoint("acfb", reduce_dim=16, hidden_dim=8)],
     "a 'acfb' checkpoint"),
    ("acfb-unfinished-model", ["--kind", "acfb", "--model", partial_of("acar")],
     "an unfinished training run (epoch 1 of 1), not a model: finish it with `acar train "
     "--resume`"),
    ("acfb-other-features", ["--kind", "acfb", "--model", acar_other_features],
     "trained on other features than those of 'vid_a'"),
    ("acfb-wide-features", ["--kind", "acfb", "--model", good_file("acar"),
                            "--features", wide_features], "channels 8 != 16"),
    ("acfb-short-side", ["--kind", "acfb", "--model", good_file("acar"),
                         "--features", other_features], "short_side 36 != 80"),
    ("acfb-weights-mismatch", ["--kind", "acfb", "--model", mismatched_weights],
     "its weights do not fit a 'acar' head"),
    ("acfb-model-not-a-checkpoint", ["--kind", "acfb", "--model", text_file("x", "m.pt")],
     "not a readable checkpoint"),
    ("acfb-annotations-garbage", ["--kind", "acfb", "--model", good_file("acar"),
                                  "--annotations", text_file("a,b\n", "a.csv")], "a.csv"),
    ("lfb-with-model", ["--model", good_file("acar")], "drop --model and --annotations"),
    ("lfb-with-annotations", ["--annotations", good_file("gt")], "drop --model"),
    ("det-score-thr-too-big", ["--det-score-thr", "1.5"],
     "--det-score-thr: bank.lfb.det_score_thr must be <= 1, got 1.5"),
    ("det-score-thr-nan", ["--det-score-thr", "nan"], "bank.lfb.det_score_thr must be a finite"),
    ("batch-size-0", ["--params", params_file("bank:\n  lfb:\n    batch_size: 0\n")],
     "bank.lfb.batch_size must be >= 1, got 0"),
    ("acfb-pool-in-file", ["--kind", "acfb", "--model", good_file("acar"), "--params",
                           params_file("bank:\n  acfb:\n    pool: 3x3\n")],
     "bank.acfb.pool must be one of none, 2x2, 4x4"),
    ("view-unknown", ["--params", params_file("bank:\n  lfb:\n    view: s99\n")],
     "has no view 's99'"),
    ("unknown-key", ["--params", params_file("bank:\n  lfb:\n    window: 3\n")],
     "unknown key 'window'"),
    ("unknown-kind-section", ["--params", params_file("bank:\n  xfb: {}\n")],
     "unknown section 'bank.xfb'"),
    ("pool-flag", ["--pool", "3x3"], "--pool"),
    ("kind-flag", ["--kind", "xfb"], "--kind"),
    ("shard-out-of-range", ["--shard", "2/2"], "--shard"),
    ("shard-garbage", ["--shard", "x"], "--shard"),
    ("features-missing", ["--features", lambda w, t: t / "nope.zarr"], "nope.zarr"),
    ("features-empty", ["--features", empty_store], "no complete videos"),
    ("features-a-bank", ["--features", good_file("bank")], "lfb.zarr"),
    ("detections-not-parquet", ["--detections", text_file("x")], "not a readable Parquet"),
    ("detections-missing", ["--detections", lambda w, t: t / "nope.parquet"], "nope.parquet"),
    ("out-a-features-store", ["--out", lambda w, t: shutil.copytree(w["features"],
                                                                    t / "f.zarr")], "f.zarr"),
]


def _realise(flags: list, w: dict, tmp: Path) -> list[str]:
    return [str(f(w, tmp)) if callable(f) else f for f in flags]


def _check(code: int, text: str, must: str, before: dict | None, out: Path) -> None:
    errors = [ln for ln in text.splitlines() if re.match(r"\s*error:", ln, re.I)]
    assert code != 0, text
    assert len(errors) == 1, text
    assert must in errors[0], text
    assert "Traceback" not in text
    assert snapshot(out) == before, "the output path changed"


def _run(args_of: Callable, good: dict, tmp: Path, flags: list, previous: Path) -> tuple:
    """Run with ``flags`` (a --params among them replaces the tiny params) over a copy of
    the ``previous`` good output."""
    out = tmp / previous.name
    (shutil.copytree if previous.is_dir() else shutil.copy)(previous, out)
    flags = _realise(flags, good, tmp)
    params = None
    if "--params" in flags:
        k = flags.index("--params")
        params, flags = Path(flags[k + 1]), flags[:k] + flags[k + 2:]
    before = snapshot(out)
    if "--out" in flags:             # a case about the output path itself
        k = flags.index("--out")
        out = Path(flags[k + 1])
        before = snapshot(out)
    code, text = acar(args_of(good, out, *flags, params=params))
    return code, text, before, out


@pytest.mark.parametrize("flags,must", [c[1:] for c in TRAIN_CASES],
                         ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_input(good, tmp_path, flags, must):
    torch.manual_seed(0)
    code, text, before, out = _run(train_args, good, tmp_path, flags, good["model"])
    _check(code, text, must, before, out)
    assert not Path(str(out) + ".partial").exists()


@pytest.mark.parametrize("flags,must", [c[1:] for c in BANK_CASES],
                         ids=[c[0] for c in BANK_CASES])
def test_bad_bank_input(good, tmp_path, flags, must):
    code, text, before, out = _run(bank_args, good, tmp_path, flags, good["bank"])
    _check(code, text, must, before, out)


def test_catalogue_size():
    """Reported in the closing note of issue 19."""
    assert len(TRAIN_CASES) >= 30 and len(BANK_CASES) >= 25
    assert len({c[0] for c in TRAIN_CASES}) == len(TRAIN_CASES)
    assert len({c[0] for c in BANK_CASES}) == len(BANK_CASES)
