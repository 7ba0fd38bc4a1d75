"""``acar import``: ACAR-Net model-zoo checkpoints -> acar heads whose scores equal the
official model's.

The fixtures (``tests/fixtures/acar_import_reference.npz``: AVA_model's scores for three
boxes on a small clip; ``acar_import_heads.json``: its head's key names and shapes) were
made by ``bench/slowfast_reference.py --zoo ... --store`` from ACAR-Net's own ``AVA_model``
and its ``ava_pose_softmax_func``, on weights drawn from each key's name; here the same
checkpoints are rebuilt in its layout (``main.py``'s ``{"state_dict": {"module.*"}}``) and
imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.artifacts.labelmap import LabelMap, write_labelmap
from pipeline.backbones import build_backbone
from pipeline.import_ckpt import import_checkpoint
from pipeline.inference import load_head
from pipeline.losses import activate
from tests.backbones.slowfast_fixtures import KEYS, synthetic_input, synthetic_tensor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HEADS = json.loads((FIXTURES / "acar_import_heads.json").read_text())
SCORES = dict(np.load(FIXTURES / "acar_import_reference.npz"))
CASES = {"zoo_r50_acar": "acar_r50", "zoo_r50_linear": "acar_r50", "zoo_r101_acar": "acar_r101"}
BOXES = [[0.1, 0.1, 0.5, 0.9], [0.4, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]]
AVA60 = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29,
         30, 34, 36, 37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60,
         61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80)


@pytest.fixture
def ava_labelmap(tmp_path) -> Path:
    sup = tuple("pose" if i <= 14 else "object" if i <= 63 else "person" for i in AVA60)
    path = tmp_path / "ava60.pbtxt"
    write_labelmap(LabelMap(ids=AVA60, names=tuple(f"class {i}" for i in AVA60),
                            superclasses=sup), path)
    return path


def model_zoo_file(case: str, folder: Path, head: bool = True) -> Path:
    """The case's whole model as ACAR-Net's main.py saves it (DDP's ``module.`` names)."""
    names = [(f"backbone.module.{k}", s) for k, s in KEYS[CASES[case]]]
    if head:
        names += [(k, s) for k, s in HEADS[case]]
    state = {f"module.{k}": synthetic_tensor(k, tuple(s)) for k, s in names}
    path = folder / f"{case}.pth.tar"
    torch.save({"epoch": 1, "state_dict": state}, path)
    return path


def scores(out: Path, zoo: Path) -> np.ndarray:
    ckpt = load_checkpoint(out / "head.pt")
    head = load_head(ckpt)
    net, _, identity = build_backbone(ckpt["feature_spec"]["backbone"], str(zoo))
    assert identity == ckpt["feature_spec"]["weights"]       # eval accepts those features
    with torch.no_grad():
        context = net(torch.from_numpy(synthetic_input(8, 48, 48))).mean(dim=2)  # (1,C,3,3)
        h, w = context.shape[-2:]
        rois = torch.cat([torch.zeros(3, 1), torch.tensor(BOXES) * torch.tensor([w, h, w, h])],
                         1)
        pose = LabelMap.from_dict(ckpt["labelmap"]).pose_indices
        return activate(head(context, rois), pose).numpy()


@pytest.mark.parametrize("case", [c for c in CASES if c in HEADS])
def test_scores_equal_the_official_models(case, tmp_path, ava_labelmap):
    zoo = model_zoo_file(case, tmp_path)
    result = CliRunner().invoke(cli, ["import", str(zoo), "--out", str(tmp_path / "imp"),
                                      "--labelmap", str(ava_labelmap)])
    assert result.exit_code == 0, result.output
    assert "acar extract --backbone slowfast_r" in result.output
    record = json.loads((tmp_path / "imp" / "import.json").read_text())
    ref = SCORES[case]
    got = scores(tmp_path / "imp", zoo)
    assert got.shape == ref.shape == (3, 60)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4
    hp = record["hparams"]
    assert hp["roi_aligned"] is False
    if case == "zoo_r101_acar":
        assert (hp["depth"], hp["mlp_1x1"], record["head"]) == (1, True, "acar")
    if case == "zoo_r50_linear":
        assert record["head"] == "linear"


def test_bad_checkpoints_and_label_maps_are_one_line_errors(tmp_path, ava_labelmap):
    backbone_only = model_zoo_file("zoo_r50_linear", tmp_path, head=False)
    with pytest.raises(ArtifactError, match="no head.* tensors: a backbone-only file"):
        import_checkpoint(backbone_only, tmp_path / "a", ava_labelmap)
    zoo = model_zoo_file("zoo_r50_linear", tmp_path)
    small = tmp_path / "four.pbtxt"
    write_labelmap(LabelMap(ids=(1, 2, 3, 4), names=("a", "b", "c", "d")), small)
    with pytest.raises(ArtifactError, match="4 classes, the checkpoint has 60 outputs"):
        import_checkpoint(zoo, tmp_path / "b", small)
    shuffled = tmp_path / "shuffled.pbtxt"
    ids = AVA60[13:] + AVA60[:13]
    write_labelmap(LabelMap(ids=ids, names=tuple(map(str, ids))), shuffled)
    with pytest.raises(ArtifactError, match="softmax covers the first 13 outputs"):
        import_checkpoint(zoo, tmp_path / "c", shuffled)
    state = torch.load(zoo, weights_only=True)
    state["state_dict"]["module.head.module.extra.weight"] = torch.zeros(2)
    torch.save(state, zoo)
    with pytest.raises(ArtifactError, match=r"unexpected head tensors: \['extra.weight'\]"):
        import_checkpoint(zoo, tmp_path / "d", ava_labelmap)
    with pytest.raises(ArtifactError, match="backbone is SlowFast-50: use --backbone "
                       "slowfast_r50"):
        import_checkpoint(zoo, tmp_path / "e", ava_labelmap, backbone="slowfast_r101")
    assert not (tmp_path / "d" / "head.pt").exists()
