"""acfb's ``temporal`` option: a learned vector per relative second on the banked maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import bank, evaluate, train
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.bank_reader import BankReader
from pipeline.keyframes import Keyframe
from pipeline.models import build_head
from tests.conftest import boxes_gt
from tests.models.batches import C, K, make_bank, make_batch, rows_of
from tests.test_bank import VIDEOS, acar_checkpoint, world  # noqa: F401  (fixture)

torch.set_num_threads(1)
HP = dict(reduce_dim=16, hidden_dim=8, window=3)


def heads(seed: int = 0):
    torch.manual_seed(seed)
    paper = build_head("acfb", C, K, **HP).eval()
    torch.manual_seed(seed)
    timed = build_head("acfb", C, K, temporal="learned", **HP).eval()
    return paper, timed


def inputs():
    context, rois = make_batch((1, 2, 3), 0)
    mem, mask = make_bank((0, 4, 2), (8, 6, 6), 0)
    times = torch.tensor([[0, 0, 0, 0], [-3, -1, 2, 3], [1, -2, 0, 0]])
    return context, rois, mem, mask, times


def test_zero_embedding_is_the_papers_acfb_and_a_learned_one_tells_times_apart():
    paper, timed = heads()
    assert timed.bank_request.times and not paper.bank_request.times
    assert timed.time_embed.shape == (7, 8) and not timed.time_embed.any()
    context, rois, mem, mask, times = inputs()
    with torch.no_grad():
        ref = paper(context, rois, bank=(mem, mask))
        torch.testing.assert_close(timed(context, rois, bank=(mem, mask, times)), ref,
                                   atol=1e-5, rtol=0)
        timed.time_embed.normal_()
        a = timed(context, rois, bank=(mem, mask, times))
        b = timed(context, rois, bank=(mem, mask, -times))       # the past <-> the future
        r0 = rows_of(rois, 0)                                     # keyframe 0: no slot
        for r in (rows_of(rois, 1), rows_of(rois, 2)):
            assert (a[r] - b[r]).abs().max() > 1e-3
        torch.testing.assert_close(a[r0], ref[r0], atol=1e-5, rtol=0)
        # the padding stays invisible whatever its times
        c = timed(context, rois, bank=(mem, mask, torch.where(mask, times, 3)))
        torch.testing.assert_close(c, a, atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="slot times"):
            timed(context, rois, bank=(mem, mask))


def test_reader_gives_relative_times(world, tmp_path):  # noqa: F811
    features, dets, gt = world
    url = str(tmp_path / "acfb.zarr")
    bank.run(bank.BankConfig(kind="acfb"), features, dets, url,
             acar_checkpoint(tmp_path / "acar.pt", features), [gt])
    head = build_head("acfb", 8, 4, reduce_dim=16, hidden_dim=8, window=2, temporal="learned")
    reader = BankReader(url, head.bank_request)
    slots, mask, times = reader.gather([Keyframe("vid_a", 1, 0, None),
                                        Keyframe("vid_a", 4, 3, None)])
    vb = reader.video("vid_a")
    for b, t in enumerate((1, 4)):
        want = vb.actor_timestamps[(abs(vb.actor_timestamps - t) <= 2)
                                   & (vb.actor_timestamps != t)] - t
        np.testing.assert_array_equal(times[b, :int(mask[b].sum())].numpy(), want)
        assert (times[b, int(mask[b].sum()):] == 0).all()
    assert set(times[1][mask[1]].tolist()) == {-2, -1, 1, 2}


def test_temporal_acfb_trains_and_evaluates(world, tmp_path, labelmap_file):  # noqa: F811
    features, dets, gt = world
    url = str(tmp_path / "acfb.zarr")
    bank.run(bank.BankConfig(kind="acfb"), features, dets, url,
             acar_checkpoint(tmp_path / "acar.pt", features), [gt])
    labels = tmp_path / "gt.csv"
    write_annotations(boxes_gt(VIDEOS), labels)
    cfg = train.TrainConfig(head="acfb", epochs=2, batch_size=4,
                            hparams={**HP, "window": 2, "temporal": "learned"})
    train.run(cfg, features, dets, labels, labelmap_file, tmp_path / "a.pt", bank=url)
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt["bank"]["times"] is True
    assert ckpt["state_dict"]["time_embed"].abs().sum() > 0      # it learned something
    out = evaluate.run(evaluate.EvalConfig(), tmp_path / "a.pt", features, dets, labels,
                       labelmap_file, tmp_path / "m.json", tmp_path / "p.csv", bank=url)
    assert 0 <= out["mAP"] <= 1


# ---- scene: the window's context maps, encoded by the head ----------------------------

def test_scene_bank_holds_the_store_maps_and_the_reader_gives_the_window(world, tmp_path):  # noqa: F811
    from pipeline.artifacts import ArtifactError
    from pipeline.artifacts.banks import BankStore
    from pipeline.artifacts.features import FeatureStore

    features, dets, gt = world
    model = acar_checkpoint(tmp_path / "acar.pt", features)
    plain, url = str(tmp_path / "plain.zarr"), str(tmp_path / "scene.zarr")
    bank.run(bank.BankConfig(kind="acfb"), features, dets, plain, model, [gt])
    bank.run(bank.BankConfig(kind="acfb", scene=True), features, dets, url, model, [gt])
    store = FeatureStore(features)
    vb, vp = BankStore(url).read_video("vid_a"), BankStore(plain).read_video("vid_a")
    maps = np.asarray(store.group("vid_a")["s36"][:]).reshape(vb.scene.shape)
    np.testing.assert_array_equal(vb.scene, maps.astype(np.float16))    # (K, C, H, W)
    np.testing.assert_array_equal(vb.data, vp.data)                     # maps unchanged
    assert vp.scene is None
    head = build_head("acfb", 8, 4, reduce_dim=16, hidden_dim=8, window=2, scene=True,
                      temporal="learned")
    with pytest.raises(ArtifactError, match="build the bank with --scene"):
        BankReader(plain, head.bank_request)
    out = BankReader(url, head.bank_request).gather([Keyframe("vid_a", 1, 0, None),
                                                     Keyframe("vid_a", 4, 3, None)])
    assert len(out) == 6
    scene, mask, times = out[3:]
    assert scene.shape == (2, 4, *vb.scene.shape[1:])
    assert mask.sum(1).tolist() == [2, 4] and times[1].tolist() == [-2, -1, 1, 2]
    np.testing.assert_array_equal(scene[1, 0].numpy(), vb.scene[1].astype(np.float32))  # t=2
    assert (scene[0, 2:] == 0).all() and times[0, :2].tolist() == [1, 2]
    with pytest.raises(ArtifactError, match="acfb only"):
        bank.run(bank.BankConfig(kind="lfb", scene=True), features, dets, str(tmp_path / "l"))


def test_scene_slots_are_seen_and_masked_ones_are_not():
    torch.manual_seed(0)
    scene_head = build_head("acfb", C, K, temporal="learned", scene=True, **HP).eval()
    torch.manual_seed(0)
    timed = build_head("acfb", C, K, temporal="learned", **HP).eval()
    assert scene_head.bank_request.scene and set(scene_head.state_dict()) == \
        set(timed.state_dict())                      # the same layers encode the scene
    context, rois, mem, mask, times = inputs()
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(3, 2, *context.shape[1:], generator=g)       # (B, T, C, H, W)
    s_mask = torch.tensor([[True, False], [True, True], [False, False]])
    s_times = torch.tensor([[-4, 0], [-1, 2], [0, 0]])
    with torch.no_grad():
        scene_head.time_embed.normal_()
        timed.time_embed.copy_(scene_head.time_embed)
        ref = timed(context, rois, bank=(mem, mask, times))
        none = scene_head(context, rois, bank=(mem, mask, times, maps, s_mask.zero_(), s_times))
        torch.testing.assert_close(none, ref, atol=1e-5, rtol=0)
        s_mask = torch.tensor([[True, False], [True, True], [False, False]])
        a = scene_head(context, rois, bank=(mem, mask, times, maps, s_mask, s_times))
        for b in (0, 1):                                  # keyframes with a scene slot
            assert (a[rows_of(rois, b)] - ref[rows_of(rois, b)]).abs().max() > 1e-4
        r2 = rows_of(rois, 2)
        torch.testing.assert_close(a[r2], ref[r2], atol=1e-5, rtol=0)
        maps2 = maps.clone()
        maps2[~s_mask] = 1e4                               # padding: never seen
        torch.testing.assert_close(
            scene_head(context, rois, bank=(mem, mask, times, maps2, s_mask, s_times)), a,
            atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="bank tensors"):
            scene_head(context, rois, bank=(mem, mask, times))
