"""What a head declares: its typed config, its bank needs, the relation-head protocol, and the
state dict layout that checkpoints hold."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.models import HEADS, HeadConfig, RelationHead, build_head, head_config
from tests.models.batches import C, K

SMALL = {  # name -> small hparams (fast to build)
    "linear": {},
    "actor_actor": dict(hidden_dim=8, num_heads=2),
    "acrn": dict(hidden_dim=8, num_convs=1),
    "acar": dict(reduce_dim=16, hidden_dim=8, depth=1),
    "acfb": dict(reduce_dim=16, hidden_dim=8, depth=1),
    "lfb": dict(hidden_dim=8, num_layers=1),
    "atr": dict(hidden_dim=8),
    "s_only": dict(width=8, num_heads=2),
    "t_only": dict(width=8, num_heads=2, agg="max"),
}


def test_every_head_has_a_small_config():
    assert set(SMALL) == set(HEADS)


@pytest.mark.parametrize("name", list(HEADS))
def test_head_config_is_the_heads_frozen_dataclass(name):
    cfg = head_config(name, SMALL[name])
    assert isinstance(cfg, HEADS[name].Config) and isinstance(cfg, HeadConfig)
    for key, value in SMALL[name].items():
        assert getattr(cfg, key) == value
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.roi_size = 3
    head = build_head(name, C, K, **SMALL[name])
    assert head.config == cfg
    # what a checkpoint records (asdict) builds the same head again
    again = build_head(name, C, K, **dataclasses.asdict(cfg))
    assert again.config == cfg
    assert [(k, v.shape) for k, v in again.state_dict().items()] == \
        [(k, v.shape) for k, v in head.state_dict().items()]


@pytest.mark.parametrize("name", list(HEADS))
def test_no_hparams_are_the_defaults(name):
    assert head_config(name, {}) == HEADS[name].Config()


def test_unknown_head_is_one_line_naming_the_choices():
    with pytest.raises(ValueError) as err:
        head_config("acar_v2", {})
    msg = str(err.value)
    assert "\n" not in msg and "acar_v2" in msg
    assert all(name in msg for name in HEADS)


@pytest.mark.parametrize("name", list(HEADS))
def test_unknown_key_is_one_line_naming_head_key_and_known_keys(name):
    known = ", ".join(f.name for f in dataclasses.fields(HEADS[name].Config))
    want = f"head '{name}': unknown hyper-parameter 'foo'; known: {known}"
    with pytest.raises(ValueError) as err:
        head_config(name, {"foo": 1})
    assert str(err.value) == want
    with pytest.raises(ValueError) as err:   # the stages build heads this way
        build_head(name, C, K, foo=1)
    assert str(err.value) == want


def test_acfb_takes_no_acar_only_keys():
    """acfb's downsample follows its bank pool and its HR2O is always nl."""
    for key, value in (("downsample", "max2x2"), ("hr2o", "nl")):
        with pytest.raises(ValueError, match=f"head 'acfb': unknown hyper-parameter '{key}'"):
            head_config("acfb", {key: value})


@pytest.mark.parametrize("name,bad,field", [
    ("linear", dict(dropout=1.0), "dropout"),
    ("linear", dict(roi_size=0), "roi_size"),
    ("actor_actor", dict(hidden_dim=8, num_heads=3), "num_heads"),     # divisibility
    ("actor_actor", dict(attn_dropout=-0.1), "attn_dropout"),
    ("acrn", dict(num_convs=-1), "num_convs"),
    ("acar", dict(hr2o="transformer"), "hr2o"),                       # choices
    ("acar", dict(downsample="avg2x2"), "downsample"),
    ("acar", dict(depth=0), "depth"),                                 # ranges
    ("acar", dict(depth=4), "depth"),
    ("acar", dict(kernel_size=2), "kernel_size"),
    ("acar", dict(hidden_dim=0), "hidden_dim"),
    ("acar", dict(bias="yes"), "bias"),
    ("acfb", dict(pool="3x3"), "pool"),
    ("acfb", dict(window=-1), "window"),
    ("acfb", dict(depth=5), "depth"),
    ("lfb", dict(max_per_step=0), "max_per_step"),
    ("lfb", dict(nl_dropout=1.5), "nl_dropout"),
    ("lfb", dict(bank_dim=0), "bank_dim"),
    ("atr", dict(fuse="mul"), "fuse"),
    ("atr", dict(hidden_dim=0), "hidden_dim"),
    ("atr", dict(reach=0), "reach"),
])
def test_bad_value_is_one_line_naming_head_and_field(name, bad, field):
    for make in (lambda: head_config(name, bad), lambda: build_head(name, C, K, **bad)):
        with pytest.raises(ValueError) as err:
            make()
        msg = str(err.value)
        assert msg.startswith(f"head '{name}': {field} must be ") and "\n" not in msg


def test_good_edge_values_are_accepted():
    head_config("lfb", dict(max_per_step=None, bank_dim=None, num_layers=0))
    head_config("acar", dict(depth=3, kernel_size=1, dropout=0, downsample="global"))
    head_config("actor_actor", dict(hidden_dim=12, num_heads=3))


@pytest.mark.parametrize("name", list(HEADS))
def test_relation_heads_implement_the_protocol(name):
    head = build_head(name, C, K, **SMALL[name])
    assert isinstance(head, RelationHead) == (name in {"acrn", "acar", "acfb"})


# The state dict layout of every checkpoint made so far (depth 1, one conv, one layer):
# it must keep loading strictly, in this parameter order (optimizer states are by position).
LAYOUT = {
    "linear": ["fc.weight", "fc.bias"],
    "actor_actor": ["proj.weight", "proj.bias", "attn.qkv.weight", "attn.qkv.bias",
                    "attn.out.weight", "attn.out.bias", "norm.weight", "norm.bias",
                    "fc.weight", "fc.bias"],
    "acrn": ["rel_context.weight", "rel_context.bias", "rel_actor.weight", "rel_xy.weight",
             "convs.0.weight", "convs.0.bias", "fc.weight", "fc.bias"],
    "acar": ["reduce.weight", "conv1_context.weight", "conv1_actor.weight", "conv2.weight",
             "hr2o.blocks.0.message.q.weight", "hr2o.blocks.0.message.k.weight",
             "hr2o.blocks.0.message.v.weight", "hr2o.blocks.0.norm.weight",
             "hr2o.blocks.0.norm.bias", "hr2o.blocks.0.conv.weight", "fc1.weight", "fc2.weight"],
    "lfb": ["reduce.weight", "reduce.bias", "bank_proj.weight", "bank_proj.bias",
            "layers.0.theta.weight", "layers.0.theta.bias", "layers.0.phi.weight",
            "layers.0.phi.bias", "layers.0.g.weight", "layers.0.g.bias",
            "layers.0.norm.weight", "layers.0.norm.bias", "layers.0.out.weight",
            "layers.0.out.bias", "fc.weight", "fc.bias"],
}
LAYOUT["atr"] = ["query.weight", "query.bias", "key.weight", "key.bias", "value.weight",
                 "value.bias", "fc.weight", "fc.bias"]
LAYOUT["acfb"] = LAYOUT["acar"]   # acfb loads an acar checkpoint
LAYOUT["s_only"] = LAYOUT["t_only"] = [
    "proj.weight", "proj.bias", "blocks.0.ln1.weight", "blocks.0.ln1.bias",
    "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.out.weight",
    "blocks.0.attn.out.bias", "blocks.0.ln2.weight", "blocks.0.ln2.bias",
    "blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias", "blocks.0.mlp.2.weight",
    "blocks.0.mlp.2.bias", "ln_f.weight", "ln_f.bias", "fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", list(HEADS))
def test_an_old_layout_state_dict_loads(name):
    head = build_head(name, C, K, **SMALL[name])
    assert [n for n, _ in head.named_parameters()] == LAYOUT[name]
    shapes = {k: v.shape for k, v in head.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    old = {k: torch.randn(shapes[k], generator=g) for k in LAYOUT[name]}
    head.load_state_dict(old, strict=True)
    assert all(torch.equal(head.state_dict()[k], v) for k, v in old.items())
