import pytest

from pipeline.artifacts import ArtifactError
from pipeline.config import load_config
from pipeline.train import TrainConfig


def test_sections_then_overrides(tmp_path):
    p = tmp_path / "stages.yaml"
    p.write_text("train:\n  epochs: 3\n  lr: 0.5\nheads:\n  acar:\n    lr: 0.2\n"
                 "    hparams: {depth: 1}\n")
    cfg = load_config(TrainConfig, ["train", "heads.acar"], p, {"epochs": None, "seed": 7})
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.hparams) == (3, 0.2, 7, {"depth": 1})
    assert load_config(TrainConfig, ["train", "heads.missing"], p).lr == 0.5


def test_unknown_key_is_a_clear_error(tmp_path):
    p = tmp_path / "stages.yaml"
    p.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ArtifactError, match=r"unknown TrainConfig parameter\(s\) \['epoch'\]"):
        load_config(TrainConfig, "train", p)


def test_bad_yaml(tmp_path):
    p = tmp_path / "stages.yaml"
    p.write_text("train: [1,\n")
    with pytest.raises(ArtifactError, match="invalid YAML"):
        load_config(TrainConfig, "train", p)


def test_repo_stages_yaml_fills_every_stage_config():
    """The shipped stages.yaml only uses keys the dataclasses know."""
    from pathlib import Path

    import yaml

    from pipeline.bank import BankConfig
    from pipeline.detect import DetectConfig
    from pipeline.evaluate import EvalConfig
    from pipeline.extract import ExtractConfig
    from pipeline.synth import SynthConfig

    root = Path(__file__).resolve().parents[1]
    for params in [root / "stages.yaml", root / "tests" / "stages_tiny.yaml"]:
        for cls, sec in [(SynthConfig, "synth"), (DetectConfig, "detect"),
                         (ExtractConfig, "extract"), (BankConfig, "bank.lfb"),
                         (BankConfig, "bank.acfb"), (EvalConfig, "eval")]:
            load_config(cls, sec, params)
        for head in yaml.safe_load(params.read_text())["heads"]:
            load_config(TrainConfig, ["train", f"heads.{head}"], params)
