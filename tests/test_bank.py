"""The bank stage (lfb, acfb), its store contract and the reader the bank heads train with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from pipeline import bank, evaluate, inference, train
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.banks import BankStore, window_rows
from pipeline.artifacts.checkpoint import load_checkpoint, save_checkpoint
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureStore
from pipeline.bank_reader import BankReader, open_bank
from pipeline.keyframes import FeatureCache, Keyframe, batch
from pipeline.models import BankRequest, build_head
from pipeline.models.actor import actor_vectors
from pipeline.shards import stale_items
from tests.conftest import LABELMAP, boxes_gt, make_feature_store

VIDEOS = {"vid_a": 6, "vid_b": 4}        # keyframes at seconds 1..K


def det_rows(videos: dict[str, int], shift: float = 0.0) -> pd.DataFrame:
    gt = boxes_gt(videos)
    det = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
    det = det.assign(x1=det.x1 + shift, x2=det.x2 + shift, score=0.95)
    extra = pd.DataFrame({"video_id": ["vid_a", "vid_a"], "timestamp": [2, 2],
                          "x1": [0.3, 0.0], "y1": [0.0, 0.0], "x2": [0.5, 0.2],
                          "y2": [0.4, 0.3], "score": [0.97, 0.5]})   # a 3rd person; a weak one
    return pd.concat([det, extra], ignore_index=True)


@pytest.fixture
def world(tmp_path):
    """Features, detections (boxes shifted right of GT), GT for vid_a only (the train video)."""
    features = str(tmp_path / "f.zarr")
    make_feature_store(features, VIDEOS)
    dets = tmp_path / "d.parquet"
    write_detections(det_rows(VIDEOS, shift=0.05), dets, {"source": "test"})
    gt = tmp_path / "train.csv"
    write_annotations(boxes_gt({"vid_a": 6}), gt)
    return features, dets, gt


def acar_checkpoint(path, features: str, seed: int = 0, hidden_dim: int = 8) -> str:
    torch.manual_seed(seed)
    head = build_head("acar", 8, LABELMAP.num_classes, reduce_dim=16, hidden_dim=hidden_dim)
    store = FeatureStore(features)
    spec = store.spec(store.videos()[0])
    save_checkpoint({"head": "acar", "hparams": {"reduce_dim": 16, "hidden_dim": hidden_dim},
                     "in_channels": 8, "num_classes": LABELMAP.num_classes,
                     "labelmap": LABELMAP.to_dict(),
                     "feature_spec": {**spec.to_dict(), "train_view": "s36"},
                     "state_dict": head.state_dict()}, path)
    return str(path)


def read_all(url: str) -> dict:
    store = BankStore(url)
    out = {}
    for v in store.videos():
        vb = store.read_video(v)
        out[v] = {k: getattr(vb, k) for k in ("timestamps", "actor_timestamps", "actor_index",
                                              "boxes", "scores", "from_gt", "data")}
    return out


def assert_same_bytes(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for v in a:
        for k in a[v]:
            assert a[v][k].dtype == b[v][k].dtype and a[v][k].shape == b[v][k].shape, (v, k)
            assert a[v][k].tobytes() == b[v][k].tobytes(), (v, k)


# ---- lfb -------------------------------------------------------------------------------

def test_lfb_bank_keys_and_vectors(world, tmp_path):
    features, dets, _ = world
    url = str(tmp_path / "lfb.zarr")
    assert bank.run(bank.BankConfig(kind="lfb"), features, dets, url) == []
    store = BankStore(url)
    assert store.videos() == ["vid_a", "vid_b"]
    vb = store.read_video("vid_a")
    assert vb.kind == "lfb" and vb.timestamps.tolist() == [1, 2, 3, 4, 5, 6]
    # two persons per second, a third at t=2; the 0.5-score detection is not banked
    assert vb.keys() == [("vid_a", t, a) for t in range(1, 7) for a in range(3 if t == 2 else 2)]
    assert vb.data.dtype == np.float16 and vb.data.shape == (13, 8)
    assert not vb.from_gt.any() and (vb.scores >= 0.9).all()
    src = FeatureStore(features)
    kf = Keyframe("vid_a", 2, 1, vb.boxes[vb.actor_timestamps == 2])
    ctx, rois, valid = batch([kf], FeatureCache(src, "s36"))
    assert valid.tolist() == [[5, 6]]               # a 48x36 image on 6x6 maps of 48x48 inputs
    want = actor_vectors(ctx[:, :, :5, :6], rois).numpy().astype(np.float16)   # image cells only
    np.testing.assert_array_equal(vb.data[vb.actor_timestamps == 2], want)
    assert store.spec("vid_a")["image_cells"] == [5, 6]
    size = store.size()
    assert size["keyframes"] == 10 and size["actors"] == 21
    assert size["bytes_per_keyframe"] > 21 * 8 * 2 / 10           # the vectors at least


def test_windows_at_the_start_and_end_of_a_video():
    ts = np.repeat(np.arange(1, 7), 2).astype(np.int32)              # 2 actors at 1..6
    assert ts[window_rows(ts, 1, 2)].tolist() == [1, 1, 2, 2, 3, 3]  # nothing before 1
    assert ts[window_rows(ts, 6, 2)].tolist() == [4, 4, 5, 5, 6, 6]  # nothing after 6
    assert ts[window_rows(ts, 3, 2)].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert ts[window_rows(ts, 1, 2, exclude_current=True)].tolist() == [2, 2, 3, 3]
    assert ts[window_rows(ts, 6, 0, exclude_current=True)].tolist() == []
    assert window_rows(ts, 40, 10).tolist() == [] and window_rows(ts[:0], 3, 10).tolist() == []


def test_reader_gathers_windows_padded_and_masked(world, tmp_path):
    features, dets, _ = world
    url = str(tmp_path / "lfb.zarr")
    bank.run(bank.BankConfig(kind="lfb"), features, dets, url)
    request = BankRequest("lfb", window=2, max_per_step=None, exclude_current=False, dim=8)
    vb = BankStore(url).read_video("vid_a")
    for in_memory in (True, False):
        reader = BankReader(url, request, in_memory=in_memory)
        kfs = [Keyframe("vid_a", 1, 0, None), Keyframe("vid_a", 6, 5, None),
               Keyframe("vid_b", 4, 3, None), Keyframe("vid_a", 3, 2, None)]
        slots, mask = reader.gather(kfs)
        assert slots.shape == (4, 11, 8) and slots.dtype == torch.float32
        assert mask.sum(1).tolist() == [7, 6, 6, 11]           # clipped at both ends
        assert (slots[~mask] == 0).all()
        rows = np.flatnonzero((vb.actor_timestamps >= 4) & (vb.actor_timestamps <= 6))
        np.testing.assert_array_equal(slots[1, :6].numpy(), vb.data[rows].astype(np.float32))


def test_reader_caps_actors_per_second(world, tmp_path):
    """3 actors at t=2, cap 2: the two best scores at evaluation; random ones in training."""
    features, dets, _ = world
    url = str(tmp_path / "lfb.zarr")
    bank.run(bank.BankConfig(kind="lfb"), features, dets, url)
    reader = BankReader(url, BankRequest("lfb", window=0, max_per_step=2,
                                         exclude_current=False, dim=8))
    vb = reader.video("vid_a")
    step = np.flatnonzero(vb.actor_timestamps == 2)
    best = step[np.argsort(-vb.scores[step], kind="stable")[:2]]
    assert reader.rows("vid_a", 2).tolist() == sorted(best.tolist()) == [step[0], step[2]]
    assert reader.rows("vid_a", 2).tolist() == reader.rows("vid_a", 2).tolist()
    drawn = {tuple(reader.rows("vid_a", 2, np.random.default_rng(s))) for s in range(20)}
    assert len(drawn) > 1 and all(len(d) == 2 and set(d) <= set(step) for d in drawn)


def test_lfb_bank_resumes_after_an_interrupt(world, tmp_path, monkeypatch):
    features, dets, _ = world
    whole, url = str(tmp_path / "whole.zarr"), str(tmp_path / "resumed.zarr")
    bank.run(bank.BankConfig(kind="lfb"), features, dets, whole)
    real_finish, calls = BankStore.finish_video, []

    def dying_finish(self, video):
        calls.append(video)
        if len(calls) == 2:
            raise KeyboardInterrupt               # killed while writing the 2nd video
        real_finish(self, video)

    monkeypatch.setattr(BankStore, "finish_video", dying_finish)
    with pytest.raises(KeyboardInterrupt):
        bank.run(bank.BankConfig(kind="lfb"), features, dets, url)
    monkeypatch.setattr(BankStore, "finish_video", real_finish)
    assert BankStore(url).videos() == ["vid_a"]
    assert BankStore(url).videos(complete_only=False) == ["vid_a", "vid_b"]
    begun = []
    real_begin = BankStore.begin_video
    monkeypatch.setattr(BankStore, "begin_video",
                        lambda self, video, *a: begun.append(video) or real_begin(self, video, *a))
    bank.run(bank.BankConfig(kind="lfb"), features, dets, url)
    assert begun == ["vid_b"]                     # the finished video is kept
    assert_same_bytes(read_all(url), read_all(whole))
    begun.clear()                                 # a changed threshold rebuilds everything
    bank.run(bank.BankConfig(kind="lfb", det_score_thr=0.96), features, dets, url)
    assert begun == ["vid_a", "vid_b"] and len(BankStore(url).read_video("vid_a").scores) == 1


# ---- acfb ------------------------------------------------------------------------------

def test_acfb_bank_uses_gt_on_train_keyframes_and_stores_first_order_maps(world, tmp_path):
    features, dets, gt = world
    model = acar_checkpoint(tmp_path / "acar.pt", features)
    url = str(tmp_path / "acfb.zarr")
    assert bank.run(bank.BankConfig(kind="acfb"), features, dets, url, model, [gt]) == []
    store = BankStore(url)
    a, b = store.read_video("vid_a"), store.read_video("vid_b")
    assert a.from_gt.all() and not b.from_gt.any()          # GT for vid_a, detections for vid_b
    assert a.keys() == [("vid_a", t, i) for t in range(1, 7) for i in range(2)]
    assert b.keys() == [("vid_b", t, i) for t in range(1, 5) for i in range(2)]
    assert a.data.shape == (12, 8, 4, 4) and a.data.dtype == np.float16   # (d, H-2, W-2)
    head = inference.load_head(load_checkpoint(model))
    src = FeatureStore(features)
    kfs = [Keyframe("vid_a", t, t - 1, a.boxes[a.actor_timestamps == t]) for t in (1, 2, 3)]
    with torch.no_grad():
        ctx, rois, valid = batch(kfs, FeatureCache(src, "s36"))
        want = head.bank_maps(ctx, rois, "none", valid=valid)
    np.testing.assert_array_equal(a.data[:6], want.numpy().astype(np.float16))
    gt_boxes = np.unique(boxes_gt({"vid_a": 6})[lambda d: d.timestamp == 1][
        ["x1", "y1", "x2", "y2"]].to_numpy(np.float32), axis=0)
    np.testing.assert_array_equal(a.boxes[:2], gt_boxes)


def test_acfb_bank_of_the_same_checkpoint_is_bitwise_reproducible(world, tmp_path,
                                                                   monkeypatch):
    features, dets, gt = world
    model = acar_checkpoint(tmp_path / "acar.pt", features)
    one, two = str(tmp_path / "one.zarr"), str(tmp_path / "two.zarr")
    cfg = bank.BankConfig(kind="acfb", batch_size=4)
    bank.run(cfg, features, dets, one, model, [gt])
    bank.run(cfg, features, dets, two, model, [gt], shard=(1, 2))    # other order, sharded
    bank.run(cfg, features, dets, two, model, [gt], shard=(0, 2))
    assert_same_bytes(read_all(one), read_all(two))
    assert BankStore(one).spec("vid_a") == BankStore(two).spec("vid_a")
    # another checkpoint (other weights): every video is rebuilt, the maps change
    other = acar_checkpoint(tmp_path / "other.pt", features, seed=1)
    bank.run(cfg, features, dets, two, other, [gt])
    assert BankStore(two).spec("vid_a")["model"] != BankStore(one).spec("vid_a")["model"]
    assert not np.array_equal(read_all(two)["vid_a"]["data"], read_all(one)["vid_a"]["data"])


def test_acfb_pool_trades_size_for_detail(world, tmp_path):
    features, dets, gt = world
    model = acar_checkpoint(tmp_path / "acar.pt", features)
    sizes = {}
    for pool, hw in [("none", 4), ("2x2", 2), ("4x4", 1)]:
        url = str(tmp_path / f"{pool}.zarr")
        bank.run(bank.BankConfig(kind="acfb", pool=pool), features, dets, url, model, [gt])
        assert BankStore(url).read_video("vid_b").data.shape == (8, 8, hw, hw)
        sizes[pool] = BankStore(url).size()["bytes_per_keyframe"]
    assert sizes["none"] > sizes["2x2"] > sizes["4x4"]


def test_empty_window_gives_the_same_output_as_an_empty_bank(tmp_path):
    """Actors only at t=1 and t=25 of a 30 s video: with w=10 neither sees another actor,
    so the acfb head's output equals that with no bank; at t=5, the t=1 actors matter."""
    features = str(tmp_path / "f.zarr")
    make_feature_store(features, {"v": 30})
    det = pd.DataFrame({"video_id": "v", "timestamp": [1, 1, 25], "x1": [0.1, 0.5, 0.2],
                        "y1": 0.2, "x2": [0.4, 0.9, 0.6], "y2": 0.9, "score": 1.0})
    dets = tmp_path / "d.parquet"
    write_detections(det, dets, {})
    model = acar_checkpoint(tmp_path / "acar.pt", features)
    url = str(tmp_path / "acfb.zarr")
    bank.run(bank.BankConfig(kind="acfb"), features, dets, url, model)
    torch.manual_seed(0)
    head = build_head("acfb", 8, 4, reduce_dim=16, hidden_dim=8).eval()
    head.load_state_dict(load_checkpoint(model)["state_dict"])
    reader = open_bank(url, head, FeatureStore(features).spec("v").to_dict())
    cache = FeatureCache(FeatureStore(features), "s36")
    boxes = det[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
    kfs = [Keyframe("v", 1, 0, boxes[:2]), Keyframe("v", 25, 24, boxes[2:]),
           Keyframe("v", 5, 4, boxes[2:])]
    slots, mask = reader.gather(kfs)
    assert mask.sum(1).tolist() == [0, 0, 2]
    with torch.no_grad():
        ctx, rois, valid = batch(kfs, cache)
        out = head(ctx, rois, bank=(slots, mask), valid=valid)
        alone = head(ctx, rois, valid=valid)
    torch.testing.assert_close(out[:3], alone[:3], atol=1e-5, rtol=0)
    assert not torch.allclose(out[3], alone[3], atol=1e-4, rtol=0)
    # lfb: its window includes t itself; a keyframe 10 s from any actor sees nothing
    lfb_url = str(tmp_path / "lfb.zarr")
    bank.run(bank.BankConfig(kind="lfb"), features, dets, lfb_url)
    lfb = build_head("lfb", 8, 4, hidden_dim=8, window=5, zero_init=False).eval()
    lslots, lmask = open_bank(lfb_url, lfb).gather([Keyframe("v", 12, 11, None)] + kfs[:1])
    assert lmask.sum(1).tolist() == [0, 2]
    ctx, rois, valid = batch([Keyframe("v", 12, 11, boxes[:1]), kfs[0]], cache)
    with torch.no_grad():
        torch.testing.assert_close(lfb(ctx, rois, bank=(lslots, lmask), valid=valid)[:1],
                                   lfb(ctx, rois, valid=valid)[:1], atol=1e-6, rtol=0)


# ---- errors ----------------------------------------------------------------------------

def test_bad_bank_inputs_are_one_line_errors_naming_the_file(world, tmp_path):
    features, dets, gt = world
    lin = tmp_path / "linear.pt"
    ckpt = load_checkpoint(acar_checkpoint(tmp_path / "acar.pt", features))
    save_checkpoint({**ckpt, "head": "linear", "hparams": {},
                     "state_dict": build_head("linear", 8, 4).state_dict()}, lin)
    with pytest.raises(ArtifactError, match=f"^{lin}: .*first-order maps of a trained acar"):
        bank.run(bank.BankConfig(kind="acfb"), features, dets, str(tmp_path / "x.zarr"), lin)
    with pytest.raises(ArtifactError, match="needs a trained acar"):
        bank.run(bank.BankConfig(kind="acfb"), features, dets, str(tmp_path / "x.zarr"))
    lfb_url, acfb_url = str(tmp_path / "lfb.zarr"), str(tmp_path / "acfb.zarr")
    bank.run(bank.BankConfig(kind="lfb"), features, dets, lfb_url)
    bank.run(bank.BankConfig(kind="acfb", pool="2x2"), features, dets, acfb_url,
             tmp_path / "acar.pt", [gt])
    acfb_head = build_head("acfb", 8, 4, reduce_dim=16, hidden_dim=8)
    lfb_head = build_head("lfb", 8, 4, hidden_dim=8)
    with pytest.raises(ArtifactError, match=f"^{lfb_url}: an lfb bank, but the head reads"):
        open_bank(lfb_url, acfb_head)
    with pytest.raises(ArtifactError, match=f"^{acfb_url}: bank maps are pooled '2x2'"):
        open_bank(acfb_url, acfb_head)
    with pytest.raises(ArtifactError, match="give --bank"):
        open_bank(None, lfb_head)
    with pytest.raises(ArtifactError, match="reads no bank"):
        open_bank(lfb_url, build_head("linear", 8, 4))
    with pytest.raises(ArtifactError, match="other features"):
        open_bank(lfb_url, lfb_head, {"backbone": "other"})
    with pytest.raises(ArtifactError, match=f"^{lfb_url}: video 'nope' is not in the bank"):
        open_bank(lfb_url, lfb_head).gather([Keyframe("nope", 1, 0, None)])
    with pytest.raises(ArtifactError, match="features and detections only"):
        bank.run(bank.BankConfig(kind="lfb"), features, dets, lfb_url, annotations=[gt])


# ---- train and eval with banks ---------------------------------------------------------

@pytest.mark.parametrize("head,hparams", [
    ("lfb", {"hidden_dim": 8, "window": 2, "max_per_step": 1}),
    ("acfb", {"reduce_dim": 16, "hidden_dim": 8, "window": 2}),
])
def test_bank_heads_train_and_evaluate(world, tmp_path, labelmap_file, head, hparams):
    features, dets, gt = world
    url = str(tmp_path / "bank.zarr")
    model = acar_checkpoint(tmp_path / "acar.pt", features) if head == "acfb" else None
    bank.run(bank.BankConfig(kind=head), features, dets, url, model,
             [gt] if head == "acfb" else [])
    labels = tmp_path / "gt.csv"
    write_annotations(boxes_gt(VIDEOS), labels)
    cfg = train.TrainConfig(head=head, hparams=hparams, epochs=2, batch_size=4)
    train.run(cfg, features, dets, labels, labelmap_file, tmp_path / "a.pt", bank=url)
    train.run(cfg, features, dets, labels, labelmap_file, tmp_path / "b.pt", bank=url)
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert a["bank"]["kind"] == head and a["bank"]["window"] == 2
    for k in a["state_dict"]:                      # bank sampling is seeded too
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    outs = [evaluate.run(evaluate.EvalConfig(), tmp_path / "a.pt", features, dets, labels,
                         labelmap_file, tmp_path / f"m{i}.json", tmp_path / f"p{i}.csv",
                         bank=url) for i in range(2)]
    assert outs[0] == outs[1] and 0 <= outs[0]["mAP"] <= 1
    assert (tmp_path / "p0.csv").read_bytes() == (tmp_path / "p1.csv").read_bytes()
    with pytest.raises(ArtifactError, match="give --bank"):
        evaluate.run(evaluate.EvalConfig(), tmp_path / "a.pt", features, dets, labels,
                     labelmap_file, tmp_path / "m.json")


def test_cli_builds_a_bank_and_reports_its_size(world, tmp_path):
    from cli.main import cli

    features, dets, gt = world
    model = acar_checkpoint(tmp_path / "acar.pt", features)
    res = CliRunner().invoke(cli, ["bank", "--kind", "acfb", "--features", features,
                                   "--detections", str(dets), "--annotations", str(gt),
                                   "--model", model, "--pool", "2x2",
                                   "--out", str(tmp_path / "b.zarr")])
    assert res.exit_code == 0, res.output
    assert "bank acfb: 2 videos (0 reused), 10 keyframes, 20 actors" in res.output
    assert "bytes/keyframe" in res.output
    assert BankStore(str(tmp_path / "b.zarr")).spec("vid_a")["pool"] == "2x2"


# ---- a run leaves its store equal to a fresh build (issue 19, items 4 and 11) -------------

def _groups(url: str) -> list[str]:
    return BankStore(url).videos(complete_only=False)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_bank_run_removes_the_groups_of_videos_not_in_its_input(tmp_path, sharded):
    """A bank built on 3 videos, plus an unfinished group of a 4th, then rebuilt on a store
    of 2: the same groups and bytes as a fresh build on the 2 (sharded: each shard removes
    only its own share, the two together all)."""
    f3, f2 = str(tmp_path / "f3.zarr"), str(tmp_path / "f2.zarr")
    make_feature_store(f3, {**VIDEOS, "vid_c": 3})
    make_feature_store(f2, VIDEOS)                     # same maps for vid_a, vid_b
    dets = tmp_path / "d.parquet"
    write_detections(det_rows(VIDEOS), dets, {"source": "test"})
    out, fresh = str(tmp_path / "bank.zarr"), str(tmp_path / "fresh.zarr")
    bank.run(bank.BankConfig(), f3, dets, out)
    BankStore(out, mode="a").store.begin_video("vid_aa", np.arange(1, 3), {"kind": "lfb"})
    assert _groups(out) == ["vid_a", "vid_aa", "vid_b", "vid_c"]
    bank.run(bank.BankConfig(), f2, dets, fresh)
    if sharded:
        for i in (1, 0):                    # each shard removes its share of the stale ones
            before = set(_groups(out))
            bank.run(bank.BankConfig(), f2, dets, out, shard=(i, 2))
            assert before - set(_groups(out)) == set(stale_items(["vid_aa", "vid_c"], [], (i, 2)))
    else:
        bank.run(bank.BankConfig(), f2, dets, out)
    assert _groups(out) == _groups(fresh) == ["vid_a", "vid_b"]
    assert_same_bytes(read_all(out), read_all(fresh))


def test_a_bank_run_on_an_empty_feature_store_removes_nothing(world, tmp_path):
    features, dets, _ = world
    out = str(tmp_path / "bank.zarr")
    bank.run(bank.BankConfig(), features, dets, out)
    empty = str(tmp_path / "empty.zarr")
    FeatureStore(empty, mode="a")
    with pytest.raises(ArtifactError, match="empty.zarr: feature store has no complete videos"):
        bank.run(bank.BankConfig(), empty, dets, out)
    assert _groups(out) == ["vid_a", "vid_b"]


def _cli(args: list[str]) -> tuple[int, str]:
    """exit code and all output of `acar ARGS`, an ArtifactError shown as `acar` shows it."""
    from cli.main import cli

    res = CliRunner().invoke(cli, args)
    out = res.output
    if isinstance(res.exception, ArtifactError):
        return 1, out + f"error: {res.exception}\n"
    return res.exit_code, out


def test_acfb_spec_mismatch_is_one_line_once_naming_the_fields(world, tmp_path):
    features, dets, gt = world
    ckpt = load_checkpoint(acar_checkpoint(tmp_path / "acar.pt", features))
    ckpt["feature_spec"] = {**ckpt["feature_spec"], "short_side": 120, "backbone": "other"}
    save_checkpoint(ckpt, tmp_path / "other.pt")
    out = tmp_path / "b.zarr"
    code, text = _cli(["bank", "--kind", "acfb", "--features", features, "--detections",
                       str(dets), "--annotations", str(gt), "--model",
                       str(tmp_path / "other.pt"), "--out", str(out)])
    assert code != 0
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, text
    assert text.count("trained on other features") == 1, text     # printed once (item 11a)
    assert "trained on other features" in lines[0] and "backbone other != test" in lines[0]
    assert "short_side 120 != 36" in lines[0] and "other.pt" in lines[0]
    assert not out.exists()


def test_cli_acfb_bank_refuses_a_checkpoint_that_is_not_acar(world, tmp_path):
    features, dets, gt = world
    ckpt = load_checkpoint(acar_checkpoint(tmp_path / "acar.pt", features))
    acfb = build_head("acfb", 8, LABELMAP.num_classes, reduce_dim=16, hidden_dim=8)
    save_checkpoint({**ckpt, "head": "acfb", "hparams": {"reduce_dim": 16, "hidden_dim": 8},
                     "state_dict": acfb.state_dict()}, tmp_path / "acfb.pt")
    out = tmp_path / "b.zarr"
    code, text = _cli(["bank", "--kind", "acfb", "--features", features, "--detections",
                       str(dets), "--annotations", str(gt), "--model",
                       str(tmp_path / "acfb.pt"), "--out", str(out)])
    assert code != 0 and not out.exists()
    assert [ln for ln in text.strip().splitlines() if not ln.startswith("bank settings: ")] == [
        f"error: {tmp_path / 'acfb.pt'}: a 'acfb' checkpoint: an acfb bank holds the "
        "first-order maps of a trained acar head"]
