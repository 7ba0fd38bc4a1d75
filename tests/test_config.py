import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import ArtifactError
from pipeline.config import SECTIONS, check_params, config_class, load_config
from pipeline.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = [ROOT / "stages.yaml", ROOT / "tests" / "stages_tiny.yaml"]


def test_sections_then_overrides(tmp_path):
    p = tmp_path / "stages.yaml"
    p.write_text("train:\n  epochs: 3\n  lr: 0.5\nheads:\n  acar:\n    lr: 0.2\n"
                 "    hparams: {depth: 1}\n")
    cfg = load_config(TrainConfig, ["train", "heads.acar"], p, {"epochs": None, "seed": 7})
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.hparams) == (3, 0.2, 7, {"depth": 1})
    assert load_config(TrainConfig, ["train", "heads.linear"], p).lr == 0.5


def test_unknown_override_is_a_clear_error(tmp_path):
    p = tmp_path / "stages.yaml"
    p.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ArtifactError, match=r"unknown TrainConfig parameter\(s\) \['epoch'\]"):
        load_config(TrainConfig, "train", p, {"epoch": 1})


def test_bad_yaml(tmp_path):
    p = tmp_path / "stages.yaml"
    p.write_text("train: [1,\n")
    with pytest.raises(ArtifactError, match="invalid YAML"):
        load_config(TrainConfig, "train", p)


def mutated(change) -> dict:
    data = yaml.safe_load(PARAMS[0].read_text())
    change(data)
    return data


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(trian={"epochs": 1}),
     "stages.yaml: unknown section 'trian'; known: synth, detect, extract, bank, train, heads"),
    (lambda d: d["bank"].update(lbf={}), "stages.yaml: unknown section 'bank.lbf'; known: "),
    (lambda d: d["heads"].update(acr={}), "stages.yaml: unknown head 'acr' in section 'heads'"),
    (lambda d: d["train"].update(epoch=1), "stages.yaml: unknown key 'epoch' in section 'train'"),
    (lambda d: d["extract"].update(short_sid=1),
     "stages.yaml: unknown key 'short_sid' in section 'extract'"),
    (lambda d: d["bank"]["lfb"].update(det_treshold=1),
     "stages.yaml: unknown key 'det_treshold' in section 'bank.lfb'"),
    (lambda d: d["heads"]["acrn"].update(head="acar"),
     "stages.yaml: unknown key 'head' in section 'heads.acrn'"),
    (lambda d: d["heads"]["acrn"].update(epoch=1),
     "stages.yaml: unknown key 'epoch' in section 'heads.acrn'"),
    (lambda d: d["heads"]["acar"]["hparams"].update(hiden_dim=1),
     "stages.yaml: heads.acar.hparams: head 'acar': unknown hyper-parameter 'hiden_dim'"),
    (lambda d: d.update(report=[1]), "stages.yaml: section 'report' must be a mapping"),
])
def test_a_misspelling_anywhere_is_a_one_line_error(change, message):
    with pytest.raises(ArtifactError) as err:
        check_params(mutated(change))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_any_stage_loading_the_file_checks_all_of_it(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("synth: {seed: 1}\ntrain: {epoch: 3}\n")
    with pytest.raises(ArtifactError, match=re.escape(f"{p}: unknown key 'epoch'")):
        load_config(config_class("synth"), "synth", p)


@pytest.mark.parametrize("change, keys", [
    (lambda d: d["bank"]["acfb"].update(pool="2x2"),
     ("heads.acfb.hparams.pool", "bank.acfb.pool")),
    (lambda d: d["bank"].pop("acfb"), None),          # the default pool: none, as acfb's
    (lambda d: d["heads"]["acar"]["hparams"].update(hidden_dim=16),
     ("heads.acfb.hparams.hidden_dim", "heads.acar.hparams.hidden_dim")),
    (lambda d: d["heads"]["acfb"]["hparams"].update(reduce_dim=32),
     ("heads.acfb.hparams.reduce_dim", "heads.acar.hparams.reduce_dim")),
    (lambda d: d["heads"].pop("acfb"), None),         # no acfb head: nothing to agree with
])
def test_coupled_parameters_must_agree(change, keys):
    data = mutated(change)
    if keys is None:
        check_params(data)
        return
    with pytest.raises(ArtifactError) as err:
        check_params(data)
    assert all(k in str(err.value) for k in keys) and "\n" not in str(err.value)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: p.name)
def test_shipped_params_fill_every_stage_config(params):
    check_params(yaml.safe_load(params.read_text()), params)
    data = yaml.safe_load(params.read_text())
    for head in data["heads"]:
        load_config(config_class(f"heads.{head}"), ["train", f"heads.{head}"], params)
    for section in SECTIONS:
        if section != "heads" and section.split(".")[0] in data:
            load_config(config_class(section), section, params)


def test_eval_predictions_does_not_import_torch(tmp_path):
    """Loading the config module (and the CLI) must not pull the stages in."""
    import subprocess
    import sys

    code = ("import sys, cli.main, pipeline.config; "
            "print(sorted(m for m in ('torch', 'pipeline.train', 'pipeline.models') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# ---- value rules (issue 19, item 7) ---------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("train:\n  batch_size: 0\n", "train.batch_size must be >= 1, got 0"),
    ("train:\n  batch_size: -2\n", "train.batch_size must be >= 1, got -2"),
    ("train:\n  epochs: 0\n", "train.epochs must be >= 1, got 0"),
    ("train:\n  lr: .nan\n", "train.lr must be a finite number, got nan"),
    ("train:\n  batch_size: 2.5\n", "train.batch_size must be an integer, got 2.5"),
    ("train:\n  batch_size: true\n", "train.batch_size must be an integer, got True"),
    ("train:\n  lr_steps: [0.5, 1.5]\n", "train.lr_steps items must be <= 1, got [0.5, 1.5]"),
    ("train:\n  momentum: 0\n", "train.momentum must be > 0 with nesterov: true, got 0"),
    ("train:\n  cache: ram\n", "train.cache must be one of auto, memory, disk, got 'ram'"),
    ("train:\n  head: foo\n", "unknown head 'foo'"),
    ("heads:\n  acar:\n    lr: -1\n", "heads.acar.lr must be > 0, got -1"),
    ("extract:\n  clip_frames: 0\n", "extract.clip_frames must be >= 1, got 0"),
    ("extract:\n  pad_multiple: 0\n", "extract.pad_multiple must be >= 1, got 0"),
    ("extract:\n  num_workers: -1\n", "extract.num_workers must be >= 0, got -1"),
    ("synth:\n  label_noise: 2\n", "synth.label_noise must be <= 1, got 2"),
    ("detect:\n  det_score_thr: -0.1\n", "detect.det_score_thr must be >= 0, got -0.1"),
    ("bank:\n  acfb:\n    batch_size: 0\n", "bank.acfb.batch_size must be >= 1, got 0"),
    ("bank:\n  lfb:\n    pool: 3x3\n", "bank.lfb.pool must be one of none, 2x2, 4x4"),
    ("eval:\n  det_score_thr: 1.5\n", "eval.det_score_thr must be <= 1, got 1.5"),
    ("demo:\n  top_k: 0\n", "demo.top_k must be >= 1, got 0"),
    ("viz:\n  chunk: 0\n", "viz.chunk must be >= 1, got 0"),
])
def test_every_numeric_parameter_of_the_file_is_checked_on_load(tmp_path, text, message):
    """Whichever stage loads the file, a bad value anywhere in it is one line naming the
    file and the parameter."""
    p = tmp_path / "stages.yaml"
    p.write_text(text)
    with pytest.raises(ArtifactError) as err:
        load_config(TrainConfig, ["train", "heads.acar"], p)
    assert str(err.value).startswith(f"{p}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("flags,message", [
    ({"lr": float("nan")}, "--lr: train.lr must be a finite number, got nan"),
    ({"lr": -1.0}, "--lr: train.lr must be > 0, got -1.0"),
    ({"epochs": 0}, "--epochs: train.epochs must be >= 1, got 0"),
    ({"epochs": -3}, "--epochs: train.epochs must be >= 1, got -3"),
    ({"num_workers": -1}, "--num-workers: train.num_workers must be >= 0, got -1"),
    ({"head": "foo"}, "--head: unknown head 'foo'; known: linear"),
])
def test_flags_are_checked_like_the_file(tmp_path, flags, message):
    p = tmp_path / "stages.yaml"
    p.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ArtifactError, match="^" + re.escape(message)):
        load_config(TrainConfig, "train", p, flags)


def test_clip_frames_zero_is_an_error_not_the_default(tmp_path):
    from pipeline.extract import ExtractConfig

    with pytest.raises(ArtifactError, match=r"^--clip-frames: extract.clip_frames must be >= 1"):
        load_config(ExtractConfig, "extract", None, {"clip_frames": 0})
    empty = tmp_path / "stages.yaml"
    empty.write_text("extract: {}\n")
    cfg = load_config(ExtractConfig, "extract", empty, {"clip_frames": None})
    assert cfg.clip_frames is None     # not given: the backbone's


def test_the_rules_name_real_fields_and_the_shipped_params_obey_them():
    from pipeline.config import RULES

    for top, rules in RULES.items():
        section = {"bank": "bank.lfb"}.get(top, top)
        names = {f.name for f in dataclasses.fields(config_class(section))}
        assert set(rules) <= names, (top, set(rules) - names)
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING
                    else f.default_factory() for f in dataclasses.fields(config_class(section))}
        check_params({top: {"lfb": defaults} if top == "bank" else defaults}, "defaults")
    for path in PARAMS:
        check_params(yaml.safe_load(path.read_text()), path)
