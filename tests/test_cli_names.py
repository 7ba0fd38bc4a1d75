"""One name per concept across the commands, the renamed params keys and flags, the
det-score warning (and --strict), --params after the subcommand, the settings line that
says where each value came from, --version and the `error:` prefix (issue 20)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.detections import read_detections, write_detections
from pipeline.config import RENAMED, resolve_config
from pipeline.evaluate import det_score_check
from tests.conftest import boxes_gt
from tests.test_bad_inputs_detect_extract import acar

ROOT = Path(__file__).resolve().parents[1]


def help_text(*args: str) -> str:
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0, res.output
    return res.output


def option_names(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


# ---- names ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "new", "old"), [
    ("detect", ["--det-score-thr"], ["--min-score", "--det-threshold"]),
    ("demo", ["--det-score-thr", "--action-score-thr"], ["--det-threshold", "--threshold"]),
    ("bank", ["--det-score-thr", "--strict"], ["--det-threshold"]),
    ("train", ["--det-score-thr", "--strict"], ["--det-threshold"]),
    ("eval", ["--det-score-thr", "--strict"], ["--det-threshold"]),
    ("viz", ["--action-score-thr"], ["--threshold"]),
])
def test_each_command_has_the_new_names_and_not_the_old(command, new, old, monkeypatch):
    monkeypatch.chdir(ROOT)
    names = option_names(help_text(command))
    assert set(new) <= names and not set(old) & names, names
    assert "--params" in names                     # accepted after the subcommand too


@pytest.mark.parametrize("command", ["bank", "train", "eval"])
def test_detections_and_labelmap_have_help_texts(command, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = " ".join(help_text(command).split())
    for option in ("--detections", "--labelmap"):
        if command == "bank" and option == "--labelmap":
            continue                               # bank reads no label map
        assert re.search(re.escape(option) + r" (FILE|PATH|TEXT) [A-Za-z]", text), option


def test_train_help_lists_every_head(monkeypatch):
    from pipeline.models import HEADS

    monkeypatch.chdir(ROOT)
    text = help_text("train")
    block = text[text.index("Heads (--head):"):]
    for name in HEADS:
        assert re.search(rf"^\s+{name}\s+\S", block, re.M), name


def test_extract_help_names_every_backbone(monkeypatch):
    from pipeline.backbones import BACKBONES

    monkeypatch.chdir(ROOT)
    text = " ".join(help_text("extract").split())       # click wraps the help lines
    block = text[text.index("--backbone"):text.index("--weights")]
    for name in BACKBONES:
        if not name.endswith("_16x8"):                 # "and their _16x8"
            assert re.search(rf"\b{name}\b", block), name


def test_detect_and_demo_default_to_one_yolo_weights():
    from pipeline.demo import DemoConfig
    from pipeline.detect import YOLO_WEIGHTS, DetectConfig

    assert DetectConfig().weights == DemoConfig().weights == YOLO_WEIGHTS
    readme = (ROOT / "README.md").read_text()
    assert YOLO_WEIGHTS in readme and "yolov8n.pt" not in readme


@pytest.mark.parametrize(("section", "old", "new"), [
    (section, old, new) for section, keys in RENAMED.items() for old, new in keys.items()])
def test_an_old_key_in_a_params_file_is_one_line_naming_the_new_key(tmp_path, section, old,
                                                                    new):
    from pipeline.train import TrainConfig

    text = {"bank": f"bank:\n  lfb:\n    {old}: 0.5\n"}.get(section, f"{section}:\n  {old}: 0.5\n")
    params = tmp_path / "p.yaml"
    params.write_text(text)
    with pytest.raises(ArtifactError) as err:
        resolve_config(TrainConfig, "train", params)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{params}: ")
    assert f"'{old}'" in msg and f"'{new}'" in msg and "renamed" in msg


def test_an_old_key_under_a_head_names_the_new_key(tmp_path):
    from pipeline.train import TrainConfig

    params = tmp_path / "p.yaml"
    params.write_text("heads:\n  acar:\n    det_threshold: 0.5\n")
    with pytest.raises(ArtifactError, match="'det_threshold' in section 'heads.acar' is now "
                                            "'det_score_thr'"):
        resolve_config(TrainConfig, ["train", "heads.acar"], params)


# ---- an old flag still works, with a warning ------------------------------------------------

def _proposals(tmp_path: Path) -> Path:
    csv = tmp_path / "proposals.csv"
    csv.write_text("vid_a,0902,0.1,0.2,0.5,0.9,,0.98\n"
                   "vid_a,0902,0.6,0.2,0.9,0.9,,0.2\n"
                   "vid_b,0903,0.1,0.2,0.5,0.9,,0.6\n")
    return csv


def test_an_old_flag_warns_and_sets_the_new_field(tmp_path):
    out = tmp_path / "d.parquet"
    res = CliRunner().invoke(cli, ["detect", "--source", "proposals", str(_proposals(tmp_path)),
                                   "--min-score", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning: --min-score is now --det-score-thr (renamed)" in res.output
    assert "det_score_thr=0.5 from --min-score" in res.output
    df, meta = read_detections(out)
    assert meta["det_score_thr"] == 0.5 and sorted(df["score"]) == pytest.approx([0.6, 0.98])
    both = CliRunner().invoke(cli, ["detect", "--source", "proposals",
                                    str(_proposals(tmp_path)), "--min-score", "0.5",
                                    "--det-score-thr", "0.4", "--out", str(out)])
    assert both.exit_code == 2 and "--min-score is the old name of --det-score-thr" in both.output


# ---- the det-score warning ------------------------------------------------------------------

@pytest.fixture
def low_scores(tmp_path) -> Path:
    """Detections that score as a real detector's do (at most 0.81) on two videos."""
    gt = boxes_gt({"vid_a": 4, "vid_b": 3})
    det = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
    det = det.assign(score=[0.81 if i == 0 else 0.4 for i in range(len(det))])
    path = tmp_path / "low.parquet"
    write_detections(det, path, {"source": "test"})
    return path


def test_a_threshold_that_drops_most_detections_warns_or_errors(low_scores):
    n = len(read_detections(low_scores)[0])
    msg = det_score_check(low_scores, 0.85, "eval")
    assert msg == (f"eval: 0 of {n} detections score >= 0.85 (det_score_thr); real detectors "
                   "usually need 0.3-0.7: set --det-score-thr or det_score_thr in the params "
                   "file")
    assert det_score_check(low_scores, 0.5, "eval") == msg.replace("0.85", "0.5").replace(
        "0 of", "1 of")
    assert det_score_check(low_scores, 0.3, "eval") is None       # all kept
    with pytest.raises(ArtifactError) as err:
        det_score_check(low_scores, 0.85, "bank", strict=True)
    assert str(err.value).startswith(f"{low_scores}: bank: 0 of {n} detections")
    assert str(err.value).endswith("(--strict)")
    # only the videos given count
    assert det_score_check(low_scores, 0.85, "eval", videos={"other"}) is None


def test_eval_warns_and_strict_stops_before_the_model_is_read(tmp_path, low_scores,
                                                               labelmap_file, monkeypatch):
    monkeypatch.chdir(tmp_path)                    # the built-in defaults: 0.85
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4}), gt)
    model = tmp_path / "not_a_model.pt"
    model.write_bytes(b"junk")
    args = ["eval", "--model", str(model), "--features", str(tmp_path / "f.zarr"),
            "--detections", str(low_scores), "--annotations", str(gt), "--labelmap",
            str(labelmap_file), "--out", str(tmp_path / "m.json")]
    code, _, err = acar(*args, "--strict")
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {low_scores}: eval: 0 of 8 detections score >= 0.85 "
                      "(det_score_thr); real detectors usually need 0.3-0.7: set "
                      "--det-score-thr or det_score_thr in the params file (--strict)"]
    code, _, err = acar(*args)                     # a warning, then the junk model fails
    assert code == 1 and "warning: eval: 0 of 8 detections score >= 0.85" in err
    assert "not_a_model.pt" in err.splitlines()[-1]
    code, _, err = acar(*args, "--det-score-thr", "0.3", "--strict")
    assert "warning: eval" not in err and "not_a_model.pt" in err.splitlines()[-1]


def test_bank_warns_when_its_threshold_drops_most_detections(tmp_path, low_scores,
                                                              monkeypatch):
    from tests.conftest import make_feature_store

    monkeypatch.chdir(tmp_path)                    # the built-in defaults: 0.9
    features = tmp_path / "f.zarr"
    make_feature_store(str(features), {"vid_a": 4, "vid_b": 3})
    out = tmp_path / "bank.zarr"
    args = ["bank", "--kind", "lfb", "--features", str(features), "--detections",
            str(low_scores), "--out", str(out)]
    code, _, err = acar(*args, "--strict")
    assert code == 1 and "bank: 0 of 14 detections score >= 0.9" in err and not out.exists()
    code, _, err = acar(*args)
    assert code == 0 and "warning: bank: 0 of 14 detections score >= 0.9" in err


# ---- --params after the subcommand, and where each value came from ---------------------------

def test_params_after_the_subcommand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                    # no stages.yaml here
    params = tmp_path / "p.yaml"
    params.write_text("detect:\n  det_score_thr: 0.5\nextract:\n  short_side: 123\n")
    text = " ".join(help_text("extract", "--params", str(params)).split())
    assert f"[{params.name}: 123]" in text
    assert "[default: 256]" in " ".join(help_text("extract").split())
    out = tmp_path / "d.parquet"
    res = CliRunner().invoke(cli, ["detect", "--params", str(params), "--source", "proposals",
                                   str(_proposals(tmp_path)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(read_detections(out)[0]["score"]) == pytest.approx([0.6, 0.98])
    both = CliRunner().invoke(cli, ["--params", str(params), "detect", "--params", str(params),
                                    "--source", "proposals", str(_proposals(tmp_path)),
                                    "--out", str(out)])
    assert both.exit_code == 2
    assert "--params is given both before and after the subcommand" in both.output


def test_the_settings_line_names_the_source_of_each_changed_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text("detect:\n  det_score_thr: 0.5\n  iou: 0.7\n  imgsz: 320\n")
    code, _, err = acar("--params", params, "detect", "--source", "proposals",
                        _proposals(tmp_path), "--time-offset", "3", "--out",
                        tmp_path / "d.parquet")
    assert code == 0, err
    # iou 0.7 is the default: not a change; the file's values, then the flags'
    assert (f"detect settings: det_score_thr=0.5, imgsz=320 from {params}; "
            "source=proposals from --source; time_offset=3 from --time-offset") in err
    code, _, err = acar("detect", "--source", "proposals", _proposals(tmp_path), "--out",
                        tmp_path / "e.parquet")
    assert "detect settings: source=proposals from --source" in err


def test_a_preset_slots_in_between_the_defaults_and_the_file(tmp_path):
    """extract.preset (the LAYERS hook): its values override the defaults, yield to the
    file's keys and the flags, and are reported as coming from ``preset:<name>``, in the
    settings line and in --help."""
    from pipeline.extract import ExtractConfig

    params = tmp_path / "p.yaml"
    params.write_text("extract:\n  preset: hoghof-toy\n  short_side: 128\n")
    res = resolve_config(ExtractConfig, "extract", params, {"batch_size": 5})
    cfg = res.config
    assert (cfg.backbone, cfg.clip_frames, cfg.short_side, cfg.batch_size) == \
        ("hoghof", 8, 128, 5)
    assert res.sources["clip_frames"] == "preset:hoghof-toy"
    assert res.sources["short_side"] == str(params)
    assert res.sources["batch_size"] == "--batch-size"
    line = res.summary("extract")
    assert line.startswith(f"extract settings: preset=hoghof-toy, short_side=128 from {params}; ")
    assert "backbone=hoghof" in line and "from preset:hoghof-toy; batch_size=5 from " \
        "--batch-size" in line
    text = " ".join(help_text("extract", "--params", str(params)).split())
    assert "[preset:hoghof-toy: 8]" in text and "[p.yaml: 128]" in text   # what a run uses
    # a --preset flag beats the file's keys; its values are the preset's
    res = resolve_config(ExtractConfig, "extract", params, {"preset": "i3d-kinetics400"})
    assert (res.config.backbone, res.config.short_side) == ("i3d", 256)
    assert res.sources["short_side"] == "preset:i3d-kinetics400"
    params.write_text("extract:\n  backbone: hoghof\n")
    assert resolve_config(ExtractConfig, "extract", params).sources == {"backbone": str(params)}


# ---- --version and the error prefix ---------------------------------------------------------



def test_version():
    code, out, _ = acar("--version")
    assert code == 0 and out.strip() == f"acar {version('acar')}"


def test_click_errors_start_with_error_like_every_other():
    res = subprocess.run([sys.executable, "-m", "cli.main", "extract", "--bogus"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1] == "error: No such option '--bogus'. Did you mean '--out'?"
    assert "Usage: " in res.stderr and "extract [OPTIONS]" in res.stderr
    assert "Error:" not in res.stderr
    code, _, err = acar("eval", "--annotations", "missing.csv")       # a bad parameter
    assert code == 2 and err.splitlines()[-1].startswith("error: Invalid value for "
                                                         "'--annotations'")
    code, _, err = acar("eval", "--predictions", "x")                # a ClickException too
    assert code == 2 and "Error" not in err
