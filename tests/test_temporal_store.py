"""``extract.temporal``: feature stores with time bins (K, C, N, H, W), what the spec records,
and what the readers give the heads that read time and those that do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from pipeline import detect, extract, extract_check
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.features import FeatureStore, parse_temporal, time_bins
from pipeline.inference import spec_differences
from pipeline.keyframes import FeatureCache
from tests.test_bad_inputs_detect_extract import acar

torch.set_num_threads(1)

# hoghof (the toy world's backbone): its map has one time step, so N bins are N sub-clips
CFG = extract.ExtractConfig(backbone="hoghof", clip_frames=8, clip_stride=1, clip_fps=None,
                            short_side=64, batch_size=4, num_workers=0)


def _cfg(**kw) -> extract.ExtractConfig:
    return extract.ExtractConfig(**{**CFG.__dict__, **kw})


@pytest.fixture(scope="module")
def world_dets(synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", out,
               [synth_world / "train.csv", synth_world / "val.csv"])
    return synth_world, out


@pytest.fixture(scope="module")
def stores(world_dets, tmp_path_factory):
    """{temporal: store url} for mean, 1, 2 and 4 bins of the same world."""
    world, dets = world_dets
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for t in ("mean", 1, 2, 4):
        out[t] = str(root / f"t{t}.zarr")
        assert extract.run(_cfg(temporal=t), world / "videos", dets, out[t]) == []
    return out


def test_parse_temporal():
    assert parse_temporal("mean") is None and parse_temporal(None) is None
    assert parse_temporal(4) == 4 and parse_temporal("2") == 2
    for bad in (0, -1, "four", 2.5, True, 65):
        with pytest.raises(ArtifactError, match="temporal must be 'mean' or a number") as err:
            parse_temporal(bad)
        assert "\n" not in str(err.value)


def test_mean_records_nothing_and_bins_are_recorded(stores):
    mean, four = FeatureStore(stores["mean"]), FeatureStore(stores[4])
    for v in mean.videos():
        assert "temporal" not in mean.spec(v).extra and mean.spec(v).time_bins is None
        assert mean.group(v)["s64"].ndim == 4
        spec = four.spec(v)
        assert spec.extra["temporal"] == 4 and spec.time_bins == 4 == time_bins(spec.to_dict())
        k, c, h, w = mean.group(v)["s64"].shape
        arr = four.group(v)["s64"]
        assert arr.shape == (k, c, 4, h, w) and arr.chunks == (1, c, 4, h, w)
        assert list(arr.metadata.dimension_names) == ["keyframe", "channel", "time", "y", "x"]
    # the store audit knows the layout: a complete temporal store passes, values included
    assert extract_check.check_store(stores[4], values=True).ok
    assert extract_check.check_store(stores[2]).ok


def test_bins_are_the_sub_clips_maps(world_dets, stores):
    """hoghof (one time step): bin i is the mean map of the i-th quarter of the clip."""
    world, _ = world_dets
    from pipeline.backbones import build_backbone
    from pipeline.video import Video

    store = FeatureStore(stores[4])
    net, bb, _ = build_backbone("hoghof")
    video = Video(world / "videos" / "val_000.mp4")
    t = float(store.timestamps("val_000")[1])
    idx = extract.clip_indices(t, video.info, 8, 1, None)
    x, size, valid = extract.preprocess(video.read(idx), 64, False,
                                        CFG.pad_multiple or extract.default_pad_multiple(CFG),
                                        bb.mean, bb.std)
    with torch.inference_mode():
        want = [net(x[None, :, 2 * i:2 * i + 2], image=(valid[3], valid[2]))[0, :, 0]
                for i in range(4)]
    got = store.read("val_000", "s64", 1)                       # (C, 4, H, W)
    for i in range(4):
        np.testing.assert_allclose(got[:, i].astype(np.float32), want[i].numpy(),
                                   rtol=1e-2, atol=2e-3)


def test_time_pool_of_a_map_with_time():
    """A backbone whose map has T' >= N time steps: N average-pooled bins of the map (one
    forward pass); mean: the map's mean, as always."""
    calls = []

    def net(x):                                  # (B, 3, T, S, S) -> (B, 2, T, S, S)
        calls.append(x.shape[2])
        return torch.cat([x[:, :1], 2 * x[:, :1]], 1)

    x = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 3, 8, 2, 2)
    assert torch.equal(extract.time_pool(net, x, None), net(x).mean(2))
    calls.clear()
    four = extract.time_pool(net, x, 4)
    assert four.shape == (1, 2, 4, 2, 2) and calls == [8]
    assert four[0, 0, :, 0, 0].tolist() == [0.5, 2.5, 4.5, 6.5]
    assert torch.allclose(four.mean(2), net(x).mean(2))
    # a map with fewer time steps than bins: sub-clips of T / N frames
    calls.clear()
    two = extract.time_pool(lambda c: net(c).mean(2, keepdim=True), x, 2)
    assert calls == [8, 4, 4] and two[0, 0, :, 0, 0].tolist() == [1.5, 5.5]


def test_readers_give_each_head_what_it_reads(stores):
    mean, four = FeatureStore(stores["mean"]), FeatureStore(stores[4])
    v = "val_000"
    bins = four.read(v, "s64")                                  # (K, C, 4, H, W)
    keys = [(v, 0), (v, 2)]
    for in_memory in (True, False):
        flat = FeatureCache(four, "s64", in_memory)             # a head without time
        got = flat.contexts(keys)
        assert got[0].shape == bins.shape[1:2] + bins.shape[3:] and got[0].dtype == np.float16
        np.testing.assert_array_equal(
            got[1], bins[2].astype(np.float32).mean(axis=1).astype(np.float16))
        np.testing.assert_array_equal(flat.context(v, 2), got[1])
        timed = FeatureCache(four, "s64", in_memory, time=True)  # s_only, t_only
        np.testing.assert_array_equal(timed.contexts(keys)[1], bins[2])
        np.testing.assert_array_equal(timed.context(v, 0), bins[0])
    # the mean store keeps giving its maps as they are
    np.testing.assert_array_equal(FeatureCache(mean, "s64").context(v, 1),
                                  mean.read(v, "s64", 1))
    with pytest.raises(ArtifactError, match="reads time bins, the store has none") as err:
        FeatureCache(mean, "s64", time=True).context(v, 0)
    assert "\n" not in str(err.value) and "--temporal" in str(err.value)


def test_the_spec_tells_temporal_stores_apart(world_dets, stores, tmp_path):
    mean, four = FeatureStore(stores["mean"]), FeatureStore(stores[4])
    v = "val_000"
    assert spec_differences(four.spec(v), mean.spec(v)) == ["temporal 4 != None"]
    assert spec_differences(four.spec(v), FeatureStore(stores[2]).spec(v)) == ["temporal 4 != 2"]
    # a rerun with another temporal rebuilds every video; the same one reuses them
    world, dets = world_dets
    import shutil

    url = str(tmp_path / "copy.zarr")
    shutil.copytree(stores[4], url)
    assert extract.run(_cfg(temporal=2), world / "videos", dets, url) == []
    assert FeatureStore(url).group(v)["s64"].shape[2] == 2
    assert extract.run(_cfg(temporal="mean"), world / "videos", dets, url) == []
    assert FeatureStore(url).group(v)["s64"].ndim == 4


def test_cli_temporal_and_bad_values(world_dets, stores, tmp_path):
    world, dets = world_dets
    out = str(tmp_path / "cli.zarr")
    args = ["extract", "--videos", str(world / "videos"), "--detections", str(dets), "--out",
            out, "--backbone", "hoghof", "--clip-frames", "8", "--clip-stride", "1",
            "--short-side", "64", "--num-workers", "0"]
    res = CliRunner().invoke(cli, [*args, "--temporal", "2"])
    assert res.exit_code == 0, res.output
    a, b = FeatureStore(out), FeatureStore(stores[2])
    for v in a.videos():
        assert a.spec(v) == b.spec(v)
        np.testing.assert_array_equal(a.read(v, "s64"), b.read(v, "s64"))
    for bad, msg in [("0", "temporal must be"), ("x", "temporal must be"),
                     ("5", "needs clip_frames >= 5 x 2")]:
        code, out_, err_ = acar(*args, "--temporal", bad)
        assert code != 0 and msg in err_, err_
        assert "Traceback" not in err_ and len(err_.strip().splitlines()[-1]) > 20


def test_int8_store_with_time_bins(world_dets, stores, tmp_path):
    world, dets = world_dets
    url = str(tmp_path / "i8.zarr")
    assert extract.run(_cfg(temporal=4, dtype="int8"), world / "videos", dets, url) == []
    store, ref = FeatureStore(url), FeatureStore(stores[4])
    assert extract_check.check_store(url, values=True).ok
    got, want = store.read("val_000", "s64"), ref.read("val_000", "s64")
    assert got.shape == want.shape and got.dtype == np.float16
    scale = np.abs(want.astype(np.float32)).max(axis=(2, 3, 4), keepdims=True) / 127
    assert (np.abs(got.astype(np.float32) - want) <= scale / 2 + 1e-3).all()
    timed = FeatureCache(store, "s64", in_memory=False, time=True)
    np.testing.assert_array_equal(timed.context("val_000", 1), got[1])


def test_train_and_eval_a_head_with_time_and_one_without(world_dets, stores, tmp_path):
    """t_only trains and scores on a store with bins and is refused (one line, before any
    epoch) on a store without; linear trains on the bins' mean; a checkpoint is refused on
    a store of another temporal."""
    from pipeline import evaluate, train
    from pipeline.artifacts.checkpoint import load_checkpoint

    world, dets = world_dets
    gt, lm = world / "train.csv", world / "labelmap.pbtxt"
    hp = {"width": 8, "num_heads": 2}
    cfg = train.TrainConfig(head="t_only", hparams=hp, epochs=2, batch_size=4, lr=0.05)
    row = train.run(cfg, stores[4], dets, gt, lm, tmp_path / "t.pt", val_annotations=gt)
    assert np.isfinite(row["loss"]) and 0 <= row["val_mAP"] <= 1
    assert load_checkpoint(tmp_path / "t.pt")["feature_spec"]["extra"]["temporal"] == 4
    ecfg = evaluate.EvalConfig()
    m = evaluate.run(ecfg, tmp_path / "t.pt", stores[4], dets, world / "val.csv", lm,
                     tmp_path / "t.json")
    assert 0 <= m["mAP"] <= 1
    with pytest.raises(ArtifactError, match="reads time bins, the store has none") as err:
        train.run(cfg, stores["mean"], dets, gt, lm, tmp_path / "t2.pt")
    assert "\n" not in str(err.value) and not (tmp_path / "t2.pt").exists()
    with pytest.raises(ArtifactError, match="temporal 4 != 2") as err:
        evaluate.run(ecfg, tmp_path / "t.pt", stores[2], dets, world / "val.csv", lm,
                     tmp_path / "t2.json")
    lin = train.TrainConfig(head="linear", epochs=1, batch_size=4)
    assert np.isfinite(train.run(lin, stores[4], dets, gt, lm, tmp_path / "l.pt")["loss"])
    m = evaluate.run(ecfg, tmp_path / "l.pt", stores[4], dets, world / "val.csv", lm,
                     tmp_path / "l.json")
    assert 0 <= m["mAP"] <= 1
    with pytest.raises(ArtifactError, match="temporal 4 != None"):
        evaluate.run(ecfg, tmp_path / "l.pt", stores["mean"], dets, world / "val.csv", lm,
                     tmp_path / "l2.json")


def test_memory_bank_two_stage_schedule(world_dets, stores, tmp_path):
    """Stage one: t_only, no bank.  ``bank --kind memory``: its pooled person features per
    box.  Stage two: t_only with a window, fine-tuned from stage one with the bank; eval."""
    from pipeline import bank, evaluate, train
    from pipeline.artifacts.banks import BankStore
    from pipeline.artifacts.checkpoint import load_checkpoint

    world, dets = world_dets
    gt, lm, feats = world / "train.csv", world / "labelmap.pbtxt", stores[4]
    hp = {"width": 8, "num_heads": 2}
    one = tmp_path / "t_only.pt"
    train.run(train.TrainConfig(head="t_only", hparams=hp, epochs=1, batch_size=4), feats, dets,
              gt, lm, one)
    url = str(tmp_path / "memory.zarr")
    cfg = bank.BankConfig(kind="memory", det_score_thr=0.5)
    assert bank.run(cfg, feats, dets, url, model=one, annotations=[gt]) == []
    store = BankStore(url)
    vb = store.read_video("val_000")
    assert vb.kind == "memory" and vb.data.shape[1:] == (8,) and len(vb.data) == len(vb.boxes)
    # the rows are the stage-one head's pooled person features of those boxes
    from pipeline.inference import load_head
    from pipeline.keyframes import Keyframe, batch

    head = load_head(load_checkpoint(one), one)
    k = int(vb.actor_timestamps[0])
    rows = vb.actor_timestamps == k
    kf = Keyframe("val_000", k, list(FeatureStore(feats).timestamps("val_000")).index(k),
                  vb.boxes[rows])
    with torch.no_grad():
        want = head.features(*batch([kf], FeatureCache(FeatureStore(feats), "s64", time=True))[:2])
    np.testing.assert_allclose(np.asarray(vb.data[:rows.sum()], np.float32), want[0].numpy(),
                               atol=2e-3, rtol=1e-2)
    two = tmp_path / "t_only_memory.pt"
    cfg2 = train.TrainConfig(head="t_only", hparams={**hp, "window": 2}, epochs=1, batch_size=4,
                             init=str(one))
    row = train.run(cfg2, feats, dets, gt, lm, two, bank=url, val_annotations=gt)
    assert np.isfinite(row["loss"])
    sd1, sd2 = load_checkpoint(one)["state_dict"], load_checkpoint(two)["state_dict"]
    assert "mem_proj.weight" in sd2 and set(sd1) < set(sd2)
    m = evaluate.run(evaluate.EvalConfig(), two, feats, dets, world / "val.csv", lm,
                     tmp_path / "m.json", bank=url)
    assert 0 <= m["mAP"] <= 1
    # a bank of another kind, or a checkpoint of another head, is a one-line error
    with pytest.raises(ArtifactError, match="memory bank holds the person features") as err:
        bank.run(cfg, feats, dets, str(tmp_path / "x.zarr"), model=two, annotations=[gt])
    assert "\n" not in str(err.value)
    with pytest.raises(ArtifactError, match="reads a memory bank|reads an memory|give --bank"):
        train.run(cfg2, feats, dets, gt, lm, tmp_path / "y.pt")
