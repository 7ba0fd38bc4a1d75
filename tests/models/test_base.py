"""What every head shares (pipeline/models/base.py): the optional norm before the classifier."""

from __future__ import annotations

import pytest
import torch

from pipeline import train
from pipeline.models import build_head
from tests.models.batches import C, K, make_batch

torch.set_num_threads(1)


def classifier_input(head: torch.nn.Module, context, rois) -> torch.Tensor:
    seen = []
    hook = head.classifier.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    head(context, rois)
    hook.remove()
    return seen[0]


@pytest.mark.parametrize("name, hparams", [("linear", {}), ("atr", dict(hidden_dim=8))])
def test_batch_norm_standardises_each_classifier_input_in_training(name, hparams):
    torch.manual_seed(0)
    head = build_head(name, C, K, norm="batch", **hparams).train()
    context, rois = make_batch((3, 4, 5), 0)
    context = context * torch.linspace(0.5, 10, C)[None, :, None, None] + 3.0
    x = classifier_input(head, context, rois)                  # (N, c)
    assert x.mean(0).abs().max() < 1e-5
    assert (x.var(0, unbiased=False) - 1).abs().max() < 1e-3   # every channel, whatever its scale
    raw = classifier_input(build_head(name, C, K, **hparams).train(), context, rois)
    assert (raw.var(0, unbiased=False) - 1).abs().max() > 0.5  # without it: as it comes


def test_without_norm_the_head_and_its_checkpoint_keys_are_as_before():
    torch.manual_seed(0)
    plain = build_head("linear", C, K)
    torch.manual_seed(0)
    normed = build_head("linear", C, K, norm="batch")
    assert plain.classifier_norm is None and set(plain.state_dict()) == {"fc.weight", "fc.bias"}
    assert {"classifier_norm.running_mean", "classifier_norm.running_var",
            "classifier_norm.weight"} <= set(normed.state_dict())
    # the norm draws no random numbers: the seeded classifier is the same
    assert torch.equal(plain.fc.weight, normed.fc.weight)


def test_one_actor_in_training_is_standardised_with_the_running_statistics():
    torch.manual_seed(0)
    head = build_head("linear", C, K, norm="batch").train()
    head(*make_batch((3, 4), 1))                              # some running statistics
    context, rois = make_batch((1,), 2)
    before = head.classifier_norm.running_mean.clone()
    out = head(context, rois)                                 # no error on one actor
    assert torch.equal(head.classifier_norm.running_mean, before)
    assert torch.allclose(out, head.eval()(context, rois))


def test_classifier_only_training_keeps_the_norm_frozen():
    head = build_head("atr", C, K, hidden_dim=8, norm="batch")
    params = train.trainable(head, "classifier")
    assert {id(p) for p in params} == {id(p) for p in head.classifier.parameters()}
    assert not head.classifier_norm.weight.requires_grad
    train.train_mode(head, "classifier")
    assert head.training and not head.classifier_norm.training
    before = head.classifier_norm.running_var.clone()
    head(*make_batch((3, 4), 0))
    assert torch.equal(head.classifier_norm.running_var, before)


@pytest.mark.parametrize("name", ["linear", "atr"])
def test_an_unknown_norm_is_a_one_line_error(name):
    with pytest.raises(ValueError, match=rf"head '{name}': norm must be one of none, batch"):
        build_head(name, C, K, norm="layer")
