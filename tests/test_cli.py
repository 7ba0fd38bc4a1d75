import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli
from pipeline.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def run_acar(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_stages():
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in ("detect", "extract", "bank", "train", "eval", "synth", "viz", "demo", "report"):
        assert f"  {name} " in out
    for name in ("detect", "extract", "bank", "train", "eval", "viz", "demo", "report"):
        res = CliRunner().invoke(cli, [name, "--help"])
        assert res.exit_code == 0 and "--out" in res.output


def test_bad_csv_is_one_line_error_with_file_and_line(tmp_path, labelmap_file):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,0001,0.1,0.1,0.5,0.5,1,0\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("v,0001,0.1,0.1,0.5,0.5,1,0.9\nv,0001,0.1,oops,0.5,0.5,1,0.9\n")
    res = run_acar("eval", "--predictions", pred, "--annotations", gt, "--labelmap",
                   labelmap_file, "--out", tmp_path / "m.json")
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {pred}:2: column 'y1' must be a number, got 'oops'"]
    assert not (tmp_path / "m.json").exists()


def test_missing_store_and_bad_params_are_clear(tmp_path, labelmap_file, detections_file):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,0001,0.1,0.1,0.5,0.5,1,0\n")
    res = run_acar("train", "--features", tmp_path / "nope.zarr", "--detections",
                   detections_file, "--annotations", gt, "--labelmap", labelmap_file,
                   "--out", tmp_path / "m.pt")
    assert res.returncode == 1 and "nope.zarr: no Zarr store here" in res.stderr
    assert "Traceback" not in res.stderr
    params = tmp_path / "stages.yaml"
    params.write_text("train:\n  epochz: 3\n")
    res = run_acar("--params", params, "train", "--features", tmp_path / "nope.zarr",
                   "--detections", detections_file, "--annotations", gt, "--labelmap",
                   labelmap_file, "--out", tmp_path / "m.pt")
    assert res.returncode == 1
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        f"error: {params}: unknown key 'epochz' in section 'train'; known: "
        + ", ".join(f.name for f in fields(TrainConfig))]


def help_text(*args: str) -> str:
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())            # unwrapped


def test_help_shows_the_values_of_this_repos_params_file(monkeypatch):
    monkeypatch.chdir(ROOT)
    extract = yaml.safe_load((ROOT / "stages.yaml").read_text())["extract"]
    out = help_text("extract")
    for option, key in [("--backbone TEXT", "backbone"), ("--short-side INTEGER", "short_side"),
                        ("--batch-size INTEGER", "batch_size"), ("--clip-fps FLOAT", "clip_fps")]:
        shown = "null" if extract[key] is None else extract[key]
        assert re.search(re.escape(option) + r" [^\[]*\[stages\.yaml: " + re.escape(f"{shown}]"),
                         out), option


def test_help_shows_the_dataclass_default_where_the_file_is_silent(tmp_path, monkeypatch):
    from pipeline.extract import ExtractConfig

    monkeypatch.chdir(tmp_path)                      # no stages.yaml here
    default = ExtractConfig()
    out = help_text("extract")
    assert f"[default: {default.backbone}]" in out and "stages.yaml:" not in out
    assert f"--short-side INTEGER Default view's scale S [default: {default.short_side}]" in out
    assert "[the backbone's, e.g. 32]" in out      # a null default keeps its explanation
    params = tmp_path / "mine.yaml"
    params.write_text("extract: {short_side: 123}\ntrain: {epochs: 7}\n")
    out = help_text("--params", str(params), "extract")
    assert "[mine.yaml: 123]" in out and f"[default: {default.backbone}]" in out
    assert "--epochs INTEGER [mine.yaml: 7]" in help_text("--params", str(params), "train")


def test_help_with_a_misspelled_params_file_is_a_one_line_error(tmp_path):
    params = tmp_path / "stages.yaml"
    params.write_text("extrac: {short_side: 1}\n")
    res = run_acar("--params", params, "synth", "--help")
    assert res.returncode == 1
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        f"error: {params}: unknown section 'extrac'; known: synth, detect, extract, bank, "
        "train, heads, eval, report, viz, demo, finetune, ensemble"]


def test_train_help_cites_only_keys_that_exist():
    out = help_text("train")
    assert "train.head" not in out and "heads.<HEAD>" in out


@pytest.mark.parametrize("stage", ["synth", "detect", "extract", "bank", "train", "viz",
                                   "demo", "report"])
def test_every_stage_help_shows_run_values(stage, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert re.search(r"\[(stages\.yaml|default|bank\.lfb): ", help_text(stage))


def test_eval_predictions_does_not_import_torch(tmp_path, labelmap_file):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,0001,0.1,0.1,0.5,0.5,1,0\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("v,0001,0.1,0.1,0.5,0.5,1,0.9\n")
    code = ("import sys\nfrom cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'pipeline.models') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code, "eval", "--predictions", str(pred),
                          "--annotations", str(gt), "--labelmap", str(labelmap_file),
                          "--out", str(tmp_path / "m.json")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "[]" and (tmp_path / "m.json").exists()


def test_hparam_sets_one_hyper_parameter_over_the_params_file(tmp_path, labelmap_file,
                                                              detections_file, monkeypatch):
    """``acar train --hparam KEY=VALUE`` (repeatable, VALUE read as YAML) overrides one key of
    heads.<HEAD>.hparams and keeps the others; a malformed one is a usage error."""
    import pipeline.train as stage

    gt = tmp_path / "gt.csv"
    gt.write_text("v,0001,0.1,0.1,0.5,0.5,1,0\n")
    params = tmp_path / "stages.yaml"
    params.write_text("heads:\n  t_only:\n    hparams: {width: 16, num_heads: 2}\n")
    seen = {}
    monkeypatch.setattr(stage, "run", lambda cfg, *a, **k: seen.setdefault("cfg", cfg))
    base = ["--params", str(params), "train", "--head", "t_only", "--features", "f.zarr",
            "--detections", str(detections_file), "--annotations", str(gt), "--labelmap",
            str(labelmap_file), "--out", str(tmp_path / "m.pt")]
    res = CliRunner().invoke(cli, [*base, "--hparam", "window=10", "--hparam", "mem_time=true",
                                   "--hparam", "agg=max"])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].hparams == {"width": 16, "num_heads": 2, "window": 10, "mem_time": True,
                                   "agg": "max"}
    assert "from --hparam" in res.output
    for bad in ["window", "=3", "a b=1", "x=[1"]:
        res = CliRunner().invoke(cli, [*base, "--hparam", bad])
        assert res.exit_code == 2 and "--hparam" in res.output, (bad, res.output)
