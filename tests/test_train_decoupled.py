"""Decoupled long-tail fine-tuning (issue 17 item 4): ``train: classifier`` freezes all but
the final classifier, ``sampler: class-balanced`` draws a class uniformly, then one of its
boxes; the CLI's flags and ``--finetune`` section, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline import train
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.keyframes import Keyframe
from pipeline.models import build_head
from tests.conftest import boxes_gt

ACRN = {"hidden_dim": 8, "num_convs": 1}


def keyframes(per_class: list[int], boxes_per_keyframe: int = 3, seed: int = 0
              ) -> list[Keyframe]:
    """Single-label boxes, ``per_class[c]`` of class c, shuffled into keyframes."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.repeat(np.arange(len(per_class)), per_class))
    out = []
    for s in range(0, len(classes), boxes_per_keyframe):
        cls = classes[s:s + boxes_per_keyframe]
        labels = np.eye(len(per_class), dtype=np.float32)[cls]
        out.append(Keyframe("v", s, s, np.tile([[0.1, 0.1, 0.5, 0.9]], (len(cls), 1))
                            .astype(np.float32), labels))
    return out


def chi2(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


CHI2_999 = {4: 18.47}       # the chi-square distribution's 0.999 quantile, 4 degrees of freedom


def test_class_balanced_draws_are_uniform_over_classes():
    per_class = [600, 120, 30, 8, 2]                    # long-tailed: 0.3% for the rarest
    samples = keyframes(per_class)
    sampler = train.ClassBalanced(samples)
    assert len(sampler) == sum(per_class)               # an epoch: one draw per box
    n = 20000
    cls, box = sampler.draw(n, np.random.default_rng(0))
    labels = np.concatenate([k.labels for k in samples])
    assert (labels[box, cls] == 1).all()                # each drawn box has its class
    counts = np.bincount(labels[box].argmax(1), minlength=5)
    assert chi2(counts, np.full(5, n / 5)) < CHI2_999[4], counts
    # the boxes of one class are drawn uniformly too (the 2 of the rarest: about half each)
    rare = box[cls == 4]
    assert len(set(rare.tolist())) == 2 and abs((rare == rare[0]).mean() - 0.5) < 0.05
    # an epoch of shuffling sees the boxes as they are: the rarest class 0.3%, not 20%
    assert counts[4] / n == pytest.approx(0.2, abs=0.01)
    assert (labels.argmax(1) == 4).mean() < 0.01


def test_class_balanced_batches_are_seeded_and_name_the_drawn_rows():
    samples = keyframes([60, 12, 3, 2, 1], boxes_per_keyframe=4)
    sampler = train.ClassBalanced(samples)
    cfg = train.TrainConfig(batch_size=5, seed=3)
    a, b = sampler.batches(0, cfg), sampler.batches(0, cfg)
    assert a == b and a != sampler.batches(1, cfg)
    assert sum(map(len, a)) == len(sampler) and all(len(x) <= 5 for x in a)
    entries = a[0]
    rows = sampler.loss_rows(entries)
    flat = np.concatenate([samples[k].labels for k, _ in entries])   # the batch's rois
    for (k, row), r in zip(entries, rows, strict=True):
        np.testing.assert_array_equal(flat[r], samples[k].labels[row])


def test_a_multi_label_box_is_drawn_through_each_of_its_classes():
    labels = np.array([[1, 0, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0]], np.float32)
    kf = Keyframe("v", 1, 0, np.tile([[0.1, 0.1, 0.5, 0.9]], (4, 1)).astype(np.float32),
                  labels)
    cls, box = train.ClassBalanced([kf]).draw(9000, np.random.default_rng(1))
    counts = np.bincount(cls, minlength=3)
    assert chi2(counts, np.full(3, 3000.0)) < 13.8      # 2 degrees of freedom, 0.999
    assert set(box[cls == 0].tolist()) == set(box[cls == 2].tolist()) == {0}
    assert (box == 0).mean() == pytest.approx(2 / 3, abs=0.02)   # through class 0 or 2


def test_classifier_only_needs_init_and_a_checkpoint_holding_every_weight(tmp_path):
    with pytest.raises(ArtifactError, match="--init") as err:
        train.TrainConfig(train="classifier").check()
    assert "\n" not in str(err.value)
    for bad, flag in [({"train": "head"}, "--train"), ({"sampler": "uniform"}, "--sampler")]:
        with pytest.raises(ArtifactError, match=flag):
            train.TrainConfig(**bad).check()
    from pipeline.artifacts.checkpoint import save_checkpoint

    fewer = build_head("acrn", 8, 4, hidden_dim=8, num_convs=0)    # no convs.0
    save_checkpoint({"head": "acrn", "hparams": {}, "in_channels": 8, "num_classes": 4,
                     "labelmap": {}, "feature_spec": {}, "state_dict": fewer.state_dict()},
                    tmp_path / "fewer.pt")
    acrn = build_head("acrn", 8, 4, **ACRN)
    assert train.init_from(acrn, tmp_path / "fewer.pt") == 6      # partly: fine to train all
    with pytest.raises(ArtifactError, match="must hold all of them") as err:
        train.init_from(acrn, tmp_path / "fewer.pt", every=True)   # ...not to freeze them
    assert "\n" not in str(err.value) and "convs.0.weight" in str(err.value)


@pytest.fixture
def world(tmp_path, feature_store, detections_file, labelmap_file):
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    return feature_store, detections_file, gt, labelmap_file


def test_classifier_only_training_changes_only_the_classifier(world, tmp_path):
    fs, det, gt, lm = world
    stage1 = train.TrainConfig(head="acrn", hparams=ACRN, epochs=1, batch_size=3)
    train.run(stage1, fs, det, gt, lm, tmp_path / "one.pt")
    stage2 = train.TrainConfig(head="acrn", hparams=ACRN, epochs=2, batch_size=3, lr=0.5,
                               init=str(tmp_path / "one.pt"), train="classifier",
                               sampler="class-balanced")
    train.run(stage2, fs, det, gt, lm, tmp_path / "two.pt")
    one = load_checkpoint(tmp_path / "one.pt")["state_dict"]
    ckpt = load_checkpoint(tmp_path / "two.pt")
    two = ckpt["state_dict"]
    assert ckpt["train"]["config"]["train"] == "classifier"
    assert ckpt["train"]["config"]["sampler"] == "class-balanced"
    classifier = {"fc.weight", "fc.bias"}
    assert set(one) == set(two) and classifier < set(two)
    for k in set(two) - classifier:
        assert torch.equal(one[k], two[k]), k                      # frozen: bitwise
    for k in classifier:
        assert not torch.equal(one[k], two[k]), k                  # trained
    # and training everything (the same sampler) moves the rest too
    every = train.TrainConfig(**{**stage2.__dict__, "train": "all"})
    train.run(every, fs, det, gt, lm, tmp_path / "all.pt")
    moved = load_checkpoint(tmp_path / "all.pt")["state_dict"]
    assert not torch.equal(one["rel_context.weight"], moved["rel_context.weight"])


def test_frozen_part_runs_in_eval_mode():
    head = build_head("actor_actor", 8, 4, hidden_dim=8, num_heads=2, attn_dropout=0.5,
                      dropout=0.1)
    train.train_mode(head, "classifier")
    assert head.training and head.classifier.training and head.dropout.training
    assert not head.attn_dropout.training and not head.attn.training
    train.train_mode(head, "all")
    assert all(m.training for m in head.modules())
    params = train.trainable(head, "classifier")
    assert {id(p) for p in params} == {id(p) for p in head.classifier.parameters()}
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


# ---- the CLI ------------------------------------------------------------------------------

def acar(args: list[str]) -> tuple[int, str]:
    from cli.main import cli

    res = CliRunner().invoke(cli, args)
    if isinstance(res.exception, ArtifactError):
        return 1, res.output + f"error: {res.exception}\n"
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def cli_args(world, out, params, *extra: str) -> list[str]:
    fs, det, gt, lm = world
    return ["--params", str(params), "train", "--features", str(fs), "--detections", str(det),
            "--annotations", str(gt), "--labelmap", str(lm), "--out", str(out), *extra]


@pytest.mark.parametrize("flags,params,must", [
    (["--train", "classifier"], "", "--init: --train classifier re-trains the classifier"),
    (["--finetune"], "finetune:\n  train: classifier\n", "--init: --train classifier"),
    (["--train", "some"], "", "Invalid value for '--train'"),
    (["--sampler", "uniform"], "", "Invalid value for '--sampler'"),
    ([], "finetune:\n  sampler: uniform\n",
     "finetune.sampler must be one of shuffle, class-balanced, got 'uniform'"),
    ([], "train:\n  train: head\n", "train.train must be one of all, classifier"),
    ([], "finetune:\n  epoch: 3\n", "unknown key 'epoch' in section 'finetune'"),
])
def test_bad_settings_are_one_line_errors(world, tmp_path, flags, params, must):
    p = tmp_path / "p.yaml"
    p.write_text("train:\n  epochs: 1\n" + params if not params.startswith("train:")
                 else params + "  epochs: 1\n")
    code, text = acar(cli_args(world, tmp_path / "m.pt", p, *flags))
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert code != 0 and len(errors) == 1 and must in errors[0], text
    assert not (tmp_path / "m.pt").exists()


def test_finetune_takes_the_section_over_the_head(world, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("train:\n  epochs: 1\n  batch_size: 3\nheads:\n  linear:\n    lr: 0.2\n"
                 "finetune:\n  train: classifier\n  sampler: class-balanced\n  epochs: 2\n")
    code, text = acar(cli_args(world, tmp_path / "one.pt", p))
    assert code == 0, text
    code, text = acar(cli_args(world, tmp_path / "two.pt", p, "--finetune", "--init",
                               str(tmp_path / "one.pt"), "--lr", "0.05"))
    assert code == 0, text
    cfg = load_checkpoint(tmp_path / "two.pt")["train"]["config"]
    assert (cfg["train"], cfg["sampler"], cfg["epochs"], cfg["lr"]) == \
        ("classifier", "class-balanced", 2, 0.05)
    assert "sampler=class-balanced" in text        # the settings line names them
