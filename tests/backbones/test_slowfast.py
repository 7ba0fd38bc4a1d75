"""SlowFast: equal to the official code on weights in the official layouts, the layouts'
key names, loading errors, shapes.

The reference maps (``tests/fixtures/slowfast_reference.npz``) and the official key lists
(``slowfast_keys.json``) were made by ``bench/slowfast_reference.py --store`` from ACAR-Net's
``slowfast.py`` and PySlowFast's ``build_model`` on weights drawn by :func:`synthetic_tensor`
from each official key name; here the same weights are written in the official containers
and read through acar's loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.artifacts import ArtifactError
from pipeline.backbones import BACKBONES, build_backbone, feature_stride, slowfast
from tests.backbones.slowfast_fixtures import (
    CASES,
    KEYS,
    MAPS,
    SMALL,
    synthetic_input,
    synthetic_tensor,
)


def official_file(case: str, folder: Path) -> Path:
    """The case's weights in its official container."""
    state = {k: synthetic_tensor(k, tuple(shape)) for k, shape in KEYS[case]}
    if CASES[case][0] == "pyslowfast":                   # save_checkpoint's dict
        path = folder / f"{case}.pyth"
        torch.save({"epoch": 1, "model_state": state, "optimizer_state": {},
                    "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)
    else:                                                # pretrained/: a bare state dict
        path = folder / f"{case}.pth.tar"
        torch.save(state, path)
    return path


@pytest.mark.parametrize("case", [c for c in CASES if c in KEYS])
def test_equal_to_the_official_code(case, tmp_path):
    fmt, name = CASES[case]
    net, spec, identity = build_backbone(name, str(official_file(case, tmp_path)))
    assert identity.startswith(f"file:{case}.")
    exported = slowfast.official_state_dict(net, fmt)           # the layout, key by key
    assert sorted([k, list(v.shape)] for k, v in exported.items()) == sorted(KEYS[case])
    with torch.no_grad():
        got = net(torch.from_numpy(synthetic_input(*SMALL))).numpy()
    ref = MAPS[case]
    assert got.shape == ref.shape == (1, 2304, 1, 2, 3)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4


def test_a_model_zoo_file_loads_its_backbone_part(tmp_path):
    """ACAR-Net's model zoo: the whole model under module.backbone.module. / module.head."""
    state = {f"module.backbone.module.{k}": synthetic_tensor(k, tuple(s))
             for k, s in KEYS["acar_r50"]}
    state["module.head.fc.weight"] = torch.zeros(60, 2304)
    path = tmp_path / "zoo.pth.tar"
    torch.save({"state_dict": state}, path)
    net = slowfast.from_file(BACKBONES["slowfast_r50"].build(), path)
    k = "slow_res4.1.conv2.weight"                       # res5 (ACAR-Net counts from 1)
    assert torch.equal(net.slow[3][1].conv_b.weight, synthetic_tensor(k, tuple(
        dict(KEYS["acar_r50"])[k])))


def test_missing_and_unexpected_keys_in_one_line(tmp_path):
    state = {k: torch.zeros(s) for k, s in KEYS["acar_r50"]}
    del state["fast_res2.0.bn3.running_var"]
    state["fast_res9.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth.tar"
    torch.save(state, path)
    with pytest.raises(ArtifactError) as err:
        build_backbone("slowfast_r50", str(path))
    msg = str(err.value)
    assert "\n" not in msg and "w.pth.tar" in msg
    assert "1 missing keys ['fast_res2.0.bn3.running_var']" in msg
    assert "1 unexpected keys ['fast_res9.0.conv1.weight']" in msg
    state = {k: torch.zeros(s) for k, s in KEYS["acar_r50"]}
    state["slow_res2.0.conv2.weight"] = torch.zeros(64, 64, 1, 1, 1)
    torch.save(state, path)
    with pytest.raises(ArtifactError, match=r"slow_res2\.0\.conv2\.weight: shape "
                       r"\(64, 64, 1, 1, 1\), SlowFast-50 needs \(128, 128, 1, 3, 3\)"):
        build_backbone("slowfast_r50", str(path))
    torch.save({"x.weight": torch.zeros(1)}, path)
    with pytest.raises(ArtifactError, match="neither ACAR-Net's .* nor PySlowFast's"):
        build_backbone("slowfast_r50", str(path))


def test_the_file_sets_fusion_and_temporal_kernels(tmp_path):
    """A PySlowFast R101 (lateral BN, kernel 7, 6 of 23 res4 blocks temporal) loads into
    slowfast_r101, whose own default is ACAR-Net's layout."""
    cfg = slowfast.SlowFastConfig(101, fusion_kernel=7, fusion_bn=True,
                                  temporal_blocks=((0, 0, 6, 3), (3, 4, 6, 3)))
    src = slowfast.SlowFast(cfg)
    path = tmp_path / "r101.pyth"
    torch.save({"model_state": slowfast.official_state_dict(src, "pyslowfast")}, path)
    net, _, _ = build_backbone("slowfast_r101", str(path))
    assert net.cfg.fusion_bn and net.cfg.fusion_kernel == 7
    assert net.cfg.kernels(0, 2) == [3] * 6 + [1] * 17 and net.cfg.kernels(1, 1) == [3] * 4
    assert not net.cfg.full_span                         # the registry entry's sampling


def test_registry_shapes_and_clip_rules():
    for name, frames in {"slowfast_r50": 32, "slowfast_r50_16x8": 64, "slowfast_r101": 32,
                         "slowfast_r101_16x8": 64}.items():
        bb = BACKBONES[name]
        assert (bb.channels, bb.stride, bb.clip_frames, bb.clip_stride) == (2304, 16, frames, 2)
        assert feature_stride(bb) == 16
    net, _, identity = build_backbone("slowfast_r50", random_init=True, seed=3)
    assert identity == "random-init(seed=3)"
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 4, 32, 48))
        assert y.shape == (1, 2304, 1, 2, 3)
        with pytest.raises(ValueError, match="multiple of 4 frames, got 6"):
            net(torch.zeros(1, 3, 6, 32, 32))
    assert net.slow_frames(32).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]     # linspace
    r101 = slowfast.SlowFast(BACKBONES["slowfast_r101"].build())
    assert r101.slow_frames(32).tolist() == list(range(0, 32, 4))
    with pytest.raises(ArtifactError, match="ResNet-style"):
        build_backbone("slowfast_r50", random_init=True, dilate_last=True)


def test_weights_names_resolve_offline_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("ACAR_OFFLINE", "1")
    with pytest.raises(ArtifactError, match="SLOWFAST_R50_K400.pth.tar is not in .* download "
                       "it from https://drive.usercontent.google.com/.* or pass --weights"):
        slowfast.resolve(50, None)
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar"
    path.write_bytes(b"x")
    got, identity = slowfast.resolve(50, "ava-acar")
    assert got == path and identity.startswith("file:AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar:")
    assert slowfast.resolve(50, str(path))[1] == identity   # a name and its path: the same
    with pytest.raises(ArtifactError, match="neither a weights name"):
        slowfast.resolve(50, "kinetics700")
