import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import inference, train
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.annotations import write_annotations
from pipeline.artifacts.checkpoint import load_checkpoint
from pipeline.artifacts.features import FeatureStore
from pipeline.distributed import Dist
from pipeline.keyframes import FeatureCache, Keyframe, TrainKeyframes, index_runs, jitter_boxes
from pipeline.losses import activate, ava_loss
from pipeline.models import build_head
from tests.conftest import LABELMAP, boxes_gt, make_feature_store


def test_jitter_stays_inside_image_and_keeps_boxes_valid():
    rng = np.random.default_rng(0)
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.9, 0.95, 1.0, 1.0], [0.2, 0.2, 0.4, 0.6]],
                     np.float32)
    for _ in range(200):
        out = jitter_boxes(boxes, rng, 0.075)
        assert (out >= 0).all() and (out <= 1).all()
        assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()
        moved = np.abs(out[2] - boxes[2]) / np.array([0.2, 0.4, 0.2, 0.4])
        assert (moved <= 0.075 + 1e-6).all()
    assert not np.allclose(jitter_boxes(boxes, rng, 0.075)[2], boxes[2])


def test_pose_softmax_and_loss():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    probs = activate(logits, LABELMAP.pose_indices)
    assert torch.isclose(probs[0, :2].sum(), torch.tensor(1.0))
    assert torch.isclose(probs[0, 2], torch.sigmoid(torch.tensor(1.0)))
    good = ava_loss(torch.tensor([[9.0, -9.0, 9.0, -9.0]]), torch.tensor([[1.0, 0, 1, 0]]),
                    LABELMAP.pose_indices)
    bad = ava_loss(torch.tensor([[-9.0, 9.0, -9.0, 9.0]]), torch.tensor([[1.0, 0, 1, 0]]),
                   LABELMAP.pose_indices)
    assert good < 0.01 < 5 < bad


def test_lr_schedule_warmup_then_steps():
    cfg = train.TrainConfig(lr=1.0, epochs=10, warmup_epochs=1, warmup_factor=0.1,
                            lr_steps=[0.5, 0.8])
    assert train.lr_at(0, cfg, 10) == pytest.approx(0.1)
    assert train.lr_at(5, cfg, 10) == pytest.approx(0.55)
    assert train.lr_at(10, cfg, 10) == 1.0
    assert train.lr_at(50, cfg, 10) == pytest.approx(0.1)
    assert train.lr_at(80, cfg, 10) == pytest.approx(0.01)


def test_detections_matching_gt_become_samples(feature_store, detections_file):
    store = FeatureStore(feature_store)
    gt = boxes_gt({"vid_a": 4, "vid_b": 3})
    dets = pd.DataFrame({"video_id": ["vid_a", "vid_a", "vid_a"], "timestamp": [1, 1, 1],
                         "x1": [0.101, 0.5, 0.1], "y1": [0.2, 0.0, 0.2], "x2": [0.4, 0.7, 0.4],
                         "y2": [0.9, 0.3, 0.9], "score": [0.95, 0.99, 0.5]})
    kfs = train.gt_keyframes(store, gt, dets, LABELMAP, 0.9, 0.9)
    assert len(kfs) == 7
    first = kfs[0]
    assert (first.video, first.timestamp, first.index) == ("vid_a", 1, 0)
    assert len(first.boxes) == 3      # 2 GT + the matching detection (not the far or weak one)
    np.testing.assert_array_equal(first.labels[2], first.labels[0])


def test_gt_keyframes_group_rows_as_a_pandas_groupby_would(feature_store):
    """Rows shuffled and with repeated boxes: one keyframe per (video, timestamp), sorted,
    each with its unique boxes (sorted) and their multi-hot labels, as grouping with pandas
    gives them; a keyframe the store lacks is left out."""
    store = FeatureStore(feature_store)
    gt = boxes_gt({"vid_a": 4, "vid_b": 3})
    gt = pd.concat([gt, gt.iloc[[0]].assign(action_id=3),                  # a second label
                    gt.iloc[[1]].assign(timestamp=99)])                    # not in the store
    gt = gt.sample(frac=1.0, random_state=0).reset_index(drop=True)
    dets = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates().assign(
        x1=lambda d: d.x1 + 0.001, score=0.95)
    kfs = train.gt_keyframes(store, gt, dets, LABELMAP, 0.9, 0.9)
    want = []
    for (video, ts), g in gt.groupby(["video_id", "timestamp"], sort=True):
        if ts == 99:
            continue
        uniq, inv = np.unique(g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32), axis=0,
                              return_inverse=True)
        labels = np.zeros((len(uniq), LABELMAP.num_classes), np.float32)
        labels[inv.reshape(-1), [LABELMAP.index[a] for a in g["action_id"]]] = 1.0
        want.append((video, ts, uniq, labels))
    assert [(k.video, k.timestamp) for k in kfs] == [(v, t) for v, t, _, _ in want]
    assert len(kfs) == 7
    for k, (_, _, boxes, labels) in zip(kfs, want, strict=True):
        n = len(boxes)
        np.testing.assert_array_equal(k.boxes[:n], boxes)
        np.testing.assert_array_equal(k.labels[:n], labels)
        assert len(k.boxes) == 2 * n               # each GT box's shifted detection matched
        for box, label in zip(k.boxes[n:], k.labels[n:], strict=True):    # with its labels
            src = np.flatnonzero(np.abs(boxes - (box - [0.001, 0, 0, 0])).max(1) < 1e-5)
            assert len(src) == 1
            np.testing.assert_array_equal(label, labels[src[0]])


@pytest.fixture
def train_inputs(tmp_path, feature_store, detections_file, labelmap_file):
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    return feature_store, detections_file, gt, labelmap_file


def test_training_is_deterministic_and_resumable(train_inputs, tmp_path):
    fs, det, gt, lm = train_inputs
    cfg = train.TrainConfig(epochs=4, batch_size=3, lr=0.05, warmup_epochs=1)
    train.run(cfg, fs, det, gt, lm, tmp_path / "a.pt")
    train.run(cfg, fs, det, gt, lm, tmp_path / "b.pt")
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    # killed after epoch 2 of 4, then resumed: same weights as the uninterrupted run
    calls = []
    real_log = train._write_log

    def dying_log(rows, path):
        real_log(rows, path)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_write_log", dying_log)
        with pytest.raises(KeyboardInterrupt):
            train.run(cfg, fs, det, gt, lm, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()       # the output only holds finished models
    partial = load_checkpoint(tmp_path / "c.pt.partial", unfinished=True)
    assert partial["train"]["epoch"] == 2 and not partial["train"]["complete"]
    train.run(cfg, fs, det, gt, lm, tmp_path / "c.pt", resume=True)
    assert not (tmp_path / "c.pt.partial").exists()
    c = load_checkpoint(tmp_path / "c.pt")
    assert c["train"]["epoch"] == 4 and len(c["train"]["log"]) == 4
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], c["state_dict"][k], rtol=0, atol=0)
    log = (tmp_path / "c.pt.log.csv").read_text().splitlines()
    assert log[0] == "epoch,step,lr,loss,val_mAP" and len(log) == 5


def test_val_every_scores_every_nth_epoch_and_the_last_and_changes_no_weight(train_inputs,
                                                                            tmp_path):
    fs, det, gt, lm = train_inputs
    runs = {}
    for every in (1, 2):
        cfg = train.TrainConfig(epochs=5, batch_size=3, lr=0.05, val_every=every)
        train.run(cfg, fs, det, gt, lm, tmp_path / f"{every}.pt", val_annotations=gt)
        runs[every] = load_checkpoint(tmp_path / f"{every}.pt")
        log = pd.read_csv(tmp_path / f"{every}.pt.log.csv")
        scored = log.loc[log["val_mAP"].notna(), "epoch"].tolist()
        assert scored == ([1, 2, 3, 4, 5] if every == 1 else [2, 4, 5])
    for k, v in runs[1]["state_dict"].items():
        torch.testing.assert_close(runs[2]["state_dict"][k], v, rtol=0, atol=0)
    for bad in (0, 1.5, True):
        with pytest.raises(ArtifactError, match="train.val_every: must be an integer >= 1"):
            train.TrainConfig(val_every=bad).check()


def test_training_learns_separable_labels(tmp_path, labelmap_file):
    """Features that encode the pose at the box must be learnt (val mAP well above chance)."""
    from tests.conftest import make_feature_store

    videos = {f"v{i}": 5 for i in range(6)}
    gt = boxes_gt(videos, seed=1)
    store = make_feature_store(str(tmp_path / "f.zarr"), videos, channels=8, size=6)
    for video in videos:   # write the pose into channel 0 under each box
        arr = store.group(video)["s36"]
        data = arr[:].astype(np.float32) * 0.1
        g = gt[(gt.video_id == video) & gt.action_id.isin([1, 2])]
        for _, r in g.iterrows():
            c0, c1 = int(r.x1 * 48 / 8), int(np.ceil(r.x2 * 48 / 8))
            data[r.timestamp - 1, 0, 1:5, c0:c1] = 3.0 if r.action_id == 1 else -3.0
        arr[:] = data.astype(np.float16)
    det = tmp_path / "d.parquet"
    from pipeline.artifacts.detections import write_detections
    write_detections(gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates()
                     .assign(score=1.0), det, {})
    tr, va = tmp_path / "tr.csv", tmp_path / "va.csv"
    write_annotations(gt[gt.video_id.isin(["v0", "v1", "v2", "v3"])], tr)
    write_annotations(gt[gt.video_id.isin(["v4", "v5"])], va)
    cfg = train.TrainConfig(epochs=15, batch_size=4, lr=0.2, jitter=0.0)
    row = train.run(cfg, str(tmp_path / "f.zarr"), det, tr, labelmap_file, tmp_path / "m.pt",
                    val_annotations=va)
    metrics = __import__("pipeline.ava_eval", fromlist=["x"])
    assert row["val_mAP"] > 0.5 and metrics


@pytest.mark.parametrize("workers", [0, 2])   # 0: the prefetcher's fetching threads
def test_disk_loading_with_workers_matches_memory(train_inputs, tmp_path, workers):
    fs, det, gt, lm = train_inputs
    mem = train.TrainConfig(epochs=2, batch_size=3, cache="memory")
    disk = train.TrainConfig(epochs=2, batch_size=3, cache="disk", num_workers=workers)
    train.run(mem, fs, det, gt, lm, tmp_path / "mem.pt")
    train.run(disk, fs, det, gt, lm, tmp_path / "disk.pt")
    a, b = load_checkpoint(tmp_path / "mem.pt"), load_checkpoint(tmp_path / "disk.pt")
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)


def _keyframes(videos: dict[str, list[int]]) -> list[Keyframe]:
    return [Keyframe(v, 900 + k, k, np.array([[0.1, 0.2, 0.5, 0.9]], np.float32),
                     np.zeros((1, LABELMAP.num_classes), np.float32))
            for v, rows in videos.items() for k in rows]


def test_index_runs_group_consecutive_rows_of_a_video():
    keys = [("b", 3), ("a", 5), ("a", 4), ("b", 1), ("a", 4), ("a", 7), ("b", 2)]
    assert index_runs(keys) == [("a", range(4, 6)), ("a", range(7, 8)), ("b", range(1, 4))]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (1, 2), (2, 0)])
def test_disk_loader_yields_every_keyframe_once_per_epoch(tmp_path, world, workers):
    from tests.conftest import make_feature_store

    videos = {"v0": 11, "v1": 6, "v2": 9}
    store = make_feature_store(str(tmp_path / "f.zarr"), videos)
    samples = _keyframes({"v0": [0, 1, 2, 4, 5, 6, 7, 8, 10], "v1": list(range(6)),
                          "v2": [1, 3, 4, 5, 7, 8]})   # 21: a last batch of 1
    memory = FeatureCache(store, "s36")
    cache = FeatureCache(store, "s36", in_memory=False)
    cache.open(sorted(videos))
    data = TrainKeyframes(samples, cache, 0.0, 0)
    cfg = train.TrainConfig(batch_size=4)
    for epoch in (0, 1):
        batches = [[(samples[i].video, samples[i].index) for i in b]
                   for b in train.global_batches(data, epoch, cfg)]
        seen = []
        for rank in range(world):
            loader = train.epoch_loader(data, epoch, cfg, workers, Dist(rank, world))
            shares = [[(k.video, k.index) for k in kfs] for kfs, *_ in loader]
            assert shares == [b[rank::world] for b in batches]   # this rank's, in order
            seen += sum(shares, [])
        for kfs, context, rois, valid, targets in train.epoch_loader(data, epoch, cfg, workers):
            assert len(rois) == len(targets) == len(kfs)
            assert valid.tolist() == [[5, 6]] * len(kfs)   # 48x36 of 48x48 inputs, stride 8
            for b, k in enumerate(kfs):               # each keyframe got its own map
                want = memory.context(k.video, k.index).astype(np.float32)
                np.testing.assert_array_equal(context[b].numpy(), want)
        assert sorted(seen) == sorted((k.video, k.index) for k in samples)   # each once


def test_prefetcher_yields_in_order_and_raises_the_loaders_error():
    assert list(train.Prefetcher(range(10), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise ValueError("bad shard")

    with pytest.raises(ValueError, match="bad shard"):
        list(train.Prefetcher(failing()))
    it = iter(train.Prefetcher(range(1000), depth=1))   # left early: the thread stops
    assert next(it) == 0
    it.close()


def test_prefetcher_threads_fetch_the_same_batches_in_order(tmp_path):
    """A DataLoader without workers: 1 or 3 fetching threads, disk or memory, give the
    batches of the plain loader, equal and in order; an error in a fetch is raised."""
    videos = {"v0": 11, "v1": 6}
    store = make_feature_store(str(tmp_path / "f.zarr"), videos)
    samples = _keyframes({"v0": list(range(11)), "v1": list(range(6))})
    cfg = train.TrainConfig(batch_size=3, jitter=0.1)
    plain = None
    for in_memory in (True, False):
        cache = FeatureCache(store, "s36", in_memory=in_memory)
        cache.open(sorted(videos))
        data = TrainKeyframes(samples, cache, cfg.jitter, cfg.seed)
        if plain is None:
            plain = list(train.epoch_loader(data, 1, cfg, 0).loader)
        for threads in (1, 3):
            got = list(train.Prefetcher(train.epoch_loader(data, 1, cfg, 0).loader,
                                        depth=2, threads=threads))
            assert len(got) == len(plain) == 6
            for (k1, c1, r1, _, t1), (k2, c2, r2, _, t2) in zip(got, plain, strict=True):
                assert [(k.video, k.index) for k in k1] == [(k.video, k.index) for k in k2]
                for a, b in ((c1, c2), (r1, r2), (t1, t2)):
                    torch.testing.assert_close(a, b, rtol=0, atol=0)
    loader = train.epoch_loader(data, 1, cfg, 0).loader
    loader.collate_fn = lambda items: (_ for _ in ()).throw(ValueError("bad shard"))
    with pytest.raises(ValueError, match="bad shard"):
        list(train.Prefetcher(loader, threads=2))


TINY_HPARAMS = {"linear": {}, "actor_actor": {"hidden_dim": 8, "num_heads": 2},
                "acrn": {"hidden_dim": 8},
                "acar": {"reduce_dim": 8, "hidden_dim": 8, "depth": 1}}


@pytest.mark.parametrize("head", sorted(TINY_HPARAMS))
def test_every_head_trains_and_predicts_on_cached_features(head, train_inputs, tmp_path):
    fs, det, gt, lm = train_inputs
    cfg = train.TrainConfig(head=head, hparams=TINY_HPARAMS[head], epochs=3, batch_size=3,
                            lr=0.05)
    row = train.run(cfg, fs, det, gt, lm, tmp_path / "m.pt", val_annotations=gt)
    assert np.isfinite(row["loss"]) and 0 <= row["val_mAP"] <= 1
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["head"] == head and ckpt["hparams"] == inference.head_spec(head,
                                                                          TINY_HPARAMS[head])
    assert TINY_HPARAMS[head].items() <= ckpt["hparams"].items()   # the full spec, as set
    torch.manual_seed(cfg.seed)                     # the same initialisation as train.run
    init = build_head(head, 8, LABELMAP.num_classes, **TINY_HPARAMS[head]).state_dict()
    changed = [k for k, v in ckpt["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, init[k])]
    assert changed                                  # the optimiser updated the weights


def test_train_and_eval_read_a_store_by_fsspec_url(tmp_path, detections_file, labelmap_file):
    """Stores may live behind any fsspec URL (S3, GCS, ...): memory:// stands in here."""
    from pipeline import evaluate
    from tests.conftest import make_feature_store

    url = "memory://acar-train-test/features.zarr"
    make_feature_store(url, {"vid_a": 4, "vid_b": 3})
    gt = tmp_path / "gt.csv"
    write_annotations(boxes_gt({"vid_a": 4, "vid_b": 3}), gt)
    train.run(train.TrainConfig(epochs=1, batch_size=4), url, detections_file, gt,
              labelmap_file, tmp_path / "m.pt")
    metrics = evaluate.run(evaluate.EvalConfig(), tmp_path / "m.pt", url, detections_file, gt,
                           labelmap_file, tmp_path / "metrics.json")
    assert 0 <= metrics["mAP"] <= 1


def test_init_copies_the_fitting_weights_of_a_checkpoint(train_inputs, tmp_path):
    """acfb can start from an acar: same names, same shapes."""
    from pipeline.artifacts import ArtifactError

    fs, det, gt, lm = train_inputs
    hp = TINY_HPARAMS["acar"]
    train.run(train.TrainConfig(head="acar", hparams=hp, epochs=1, batch_size=3), fs, det, gt,
              lm, tmp_path / "acar.pt")
    acar = load_checkpoint(tmp_path / "acar.pt")["state_dict"]
    head = build_head("acfb", 8, LABELMAP.num_classes, **hp)
    assert train.init_from(head, tmp_path / "acar.pt") == len(acar)
    for k, v in head.state_dict().items():
        torch.testing.assert_close(v, acar[k], rtol=0, atol=0)
    with pytest.raises(ArtifactError, match="no weight of this checkpoint fits"):
        train.init_from(build_head("linear", 3, 2), tmp_path / "acar.pt")


def test_training_runs_with_deterministic_algorithms_and_restores_the_flag(monkeypatch):
    """Parallel index_put_(accumulate) on the CPU adds in a varying order: train.run turns
    torch's deterministic algorithms on for the run, and back to what they were after."""
    seen = []
    monkeypatch.setattr(train, "_run", lambda *a, **k: seen.append(
        (torch.are_deterministic_algorithms_enabled(),
         torch.is_deterministic_algorithms_warn_only_enabled())) or {})
    assert not torch.are_deterministic_algorithms_enabled()
    train.run(train.TrainConfig(), "f.zarr", "d.parquet", "a.csv", "l.pbtxt", "o.pt")
    assert seen == [(True, True)]
    assert not torch.are_deterministic_algorithms_enabled()


# ---- the image's region of each map (valid) ---------------------------------------------

def test_valid_region_of_a_16_9_view_counts_the_image_cells_from_the_top_left():
    from pipeline.artifacts.features import ViewSpec
    from pipeline.keyframes import valid_cells, valid_region

    # 1280x720 at short side 160: 284x160, padded to 288x288; stride 16: an 18x18 map
    wide = ViewSpec("s160", 160, False, (288, 288), (0, 0, 284, 160), 16.0)
    flipped = ViewSpec("s160_flip", 160, True, (288, 288), (0, 0, 284, 160), 16.0)
    assert valid_cells(wide, 18, 18) == (10, 18)          # ceil(160/16), ceil(284/16)
    assert valid_cells(flipped, 18, 18) == (10, 18)       # flipped before padding: top-left
    assert valid_cells(wide, 9, 16) == (9, 16)            # clipped to the map
    tall = ViewSpec("s160", 160, False, (288, 288), (0, 0, 160, 284), 16.0)
    region = valid_region([wide, tall, flipped], 18, 18)
    assert region.dtype == torch.int64 and region.tolist() == [[10, 18], [18, 10], [10, 18]]
    square = ViewSpec("s160", 160, False, (160, 160), (0, 0, 160, 160), 16.0)
    assert valid_region([square, square], 10, 10) is None  # whole maps: the old path


def test_every_head_call_gets_the_valid_region(train_inputs, tmp_path, monkeypatch):
    """train, the validator and prediction pass ``valid`` of the batch to the head."""
    fs, det, gt, lm = train_inputs
    from pipeline.models.linear import LinearHead

    seen, real = [], LinearHead.forward

    def spy(self, context, rois, bank=None, valid=None):
        seen.append(None if valid is None else valid.tolist())
        return real(self, context, rois, bank=bank, valid=valid)

    monkeypatch.setattr(LinearHead, "forward", spy)
    train.run(train.TrainConfig(epochs=1, batch_size=4), fs, det, gt, lm, tmp_path / "m.pt",
              val_annotations=gt)
    assert seen and all(v is not None and set(map(tuple, v)) == {(5, 6)} for v in seen)


# ---- typed hyper-parameters and old checkpoints ----------------------------------------

def test_an_unknown_hyper_parameter_is_a_one_line_error_before_any_file_is_read(tmp_path):
    from pipeline.artifacts import ArtifactError

    cfg = train.TrainConfig(head="acar", hparams={"hidden_dim": 8, "hiden_dim": 8})
    with pytest.raises(ArtifactError, match=r"^heads\.acar\.hparams: .*'acar'.*'hiden_dim'") \
            as err:
        train.run(cfg, str(tmp_path / "missing.zarr"), "d.parquet", "a.csv", "l.pbtxt",
                  tmp_path / "o.pt")
    assert "\n" not in str(err.value)


def test_a_checkpoint_written_the_old_way_still_loads(train_inputs, tmp_path):
    """acar-checkpoint/1 written before typed specs: ``hparams`` held only the keys set."""
    from pipeline.artifacts import ArtifactError
    from pipeline.artifacts.checkpoint import save_checkpoint

    fs, det, gt, lm = train_inputs
    hp = TINY_HPARAMS["acar"]
    train.run(train.TrainConfig(head="acar", hparams=hp, epochs=1, batch_size=3), fs, det, gt,
              lm, tmp_path / "new.pt")
    new = load_checkpoint(tmp_path / "new.pt")
    old = {k: v for k, v in new.items() if k != "format"} | {"hparams": dict(hp)}
    save_checkpoint(old, tmp_path / "old.pt")
    assert torch.load(tmp_path / "old.pt", weights_only=True)["hparams"] == hp
    store = FeatureStore(fs)
    kf = Keyframe("vid_a", 1, 0, np.array([[0.1, 0.2, 0.5, 0.9]], np.float32))
    from pipeline.keyframes import batch

    ctx, rois, valid = batch([kf], FeatureCache(store, "s36"))
    heads = [inference.load_head(load_checkpoint(tmp_path / n)) for n in ("new.pt", "old.pt")]
    with torch.no_grad():
        torch.testing.assert_close(heads[0](ctx, rois, valid=valid),
                                   heads[1](ctx, rois, valid=valid), rtol=0, atol=0)
    save_checkpoint(old | {"hparams": {**hp, "colour": 1}}, tmp_path / "bad.pt")
    with pytest.raises(ArtifactError, match=f"^{tmp_path / 'bad.pt'}: .*'colour'"):
        inference.load_head(load_checkpoint(tmp_path / "bad.pt"), tmp_path / "bad.pt")
    save_checkpoint(old | {"hparams": {**hp, "hidden_dim": 16}}, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="weights do not fit an? 'acar' head") as err:
        inference.load_head(load_checkpoint(tmp_path / "other.pt"), tmp_path / "other.pt")
    assert "\n" not in str(err.value)


# ---- reading maps from the store on disk ------------------------------------------------

def _view_store(url: str, k: int) -> tuple[FeatureStore, np.ndarray]:
    store = FeatureStore(url, mode="a")
    store.begin_video("v", np.arange(k), {"backbone": "x"})
    data = np.random.default_rng(1).standard_normal((k, 3, 2, 2)).astype(np.float16)
    return store, data


@pytest.mark.parametrize("url", ["local", "memory://acar-read-rows/f.zarr"])
def test_row_reader_equals_zarr_across_shards_and_empty_chunks(tmp_path, url):
    """Local stores are decoded by RowReader itself, others through zarr: same rows."""
    from pipeline.artifacts.features import SHARD_KEYFRAMES, ViewSpec
    from pipeline.keyframes import RowReader

    k = 2 * SHARD_KEYFRAMES + 5                        # 3 shards, the last one partial
    store, data = _view_store(str(tmp_path / "f.zarr") if url == "local" else url, k)
    arr = store.create_view("v", ViewSpec("s", 32, False, (32, 32), (0, 0, 32, 32), 16.0),
                            data.shape)
    arr[:SHARD_KEYFRAMES] = data[:SHARD_KEYFRAMES]     # shard 1 never written: no file
    arr[2 * SHARD_KEYFRAMES + 1] = data[2 * SHARD_KEYFRAMES + 1]   # one chunk of shard 2
    want = np.asarray(arr[:])
    assert (want[SHARD_KEYFRAMES:] == 0).sum() > 0 and want[:SHARD_KEYFRAMES].any()
    for lo, hi in [(0, k), (3, 11), (SHARD_KEYFRAMES - 2, 2 * SHARD_KEYFRAMES + 3),
                   (k - 1, k), (7, 7), (60, k + 10)]:
        got = RowReader(arr)[lo:hi]
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, want[lo:hi])
    reader = RowReader(arr)                             # shard indexes read once, kept
    np.testing.assert_array_equal(reader[5], want[5])
    np.testing.assert_array_equal(reader[[1, 40]], want[[1, 40]])
    np.testing.assert_array_equal(reader[2:9], want[2:9])


def test_row_reader_of_other_layouts_and_a_corrupt_shard_index(tmp_path):
    from pipeline.artifacts import ArtifactError
    from pipeline.artifacts.features import ViewSpec
    from pipeline.keyframes import RowReader

    store, data = _view_store(str(tmp_path / "f.zarr"), 5)
    plain = store.group("v").create_array("plain", shape=data.shape, chunks=(1, 3, 2, 2),
                                          dtype="float16")     # unsharded: read by zarr
    plain[:] = data
    np.testing.assert_array_equal(RowReader(plain)[1:4], data[1:4])
    arr = store.create_view("v", ViewSpec("s", 32, False, (32, 32), (0, 0, 32, 32), 16.0),
                            data.shape)
    arr[:] = data
    shard = tmp_path / "f.zarr" / "v" / "s" / arr.metadata.encode_chunk_key((0, 0, 0, 0))
    raw = bytearray(shard.read_bytes())
    raw[-20] ^= 0xFF                                   # a byte of the shard index
    shard.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        RowReader(arr)[0:2]


def test_disk_batches_are_decoded_into_one_array_equal_to_memory(tmp_path):
    """From disk, a batch's maps (any order, a keyframe drawn twice, across videos and
    shards) are decoded straight into the rows of one (B, C, H, W) array: equal to the
    maps from memory, and stack_float32 of them equals the stack it no longer makes."""
    from pipeline.artifacts.features import SHARD_KEYFRAMES
    from pipeline.keyframes import stack_float32
    from tests.conftest import make_feature_store

    k = SHARD_KEYFRAMES + 3                                 # v0: 2 shards
    store = make_feature_store(str(tmp_path / "f.zarr"), {"v0": k, "v1": 5})
    memory, disk = FeatureCache(store, "s36"), FeatureCache(store, "s36", in_memory=False)
    keys = [("v1", 4), ("v0", k - 1), ("v0", 2), ("v1", 4), ("v0", 3), ("v0", 1),
            ("v0", SHARD_KEYFRAMES - 1), ("v0", SHARD_KEYFRAMES)]
    got, want = disk.contexts(keys), memory.contexts(keys)
    base = got[0].base
    assert base.shape == (len(keys), *want[0].shape) and base.dtype == np.float16
    assert all(g.base is base for g in got)                 # rows of one array, in order
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[0], got[1])               # each its own keyframe
    stacked = stack_float32(got)
    np.testing.assert_array_equal(stacked.numpy(), np.stack(want).astype(np.float32))
    assert not np.shares_memory(stacked.numpy(), base)
    f32 = np.stack(want).astype(np.float32)                 # float32 rows of one array:
    out = stack_float32(list(f32))                          # copied, never a view
    np.testing.assert_array_equal(out.numpy(), f32)
    assert not np.shares_memory(out.numpy(), f32)
    shuffled = [want[1], want[0], *want[2:]]                # not in order: stacked as is
    np.testing.assert_array_equal(stack_float32(shuffled).numpy(),
                                  np.stack(shuffled).astype(np.float32))


# ---- killed runs and non-finite losses (issue 19, items 1 and 2) -----------------------------

def _kill_after_epochs(mp: pytest.MonkeyPatch, n: int) -> None:
    calls = []
    real_log = train._write_log

    def dying_log(rows, path):
        real_log(rows, path)
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt

    mp.setattr(train, "_write_log", dying_log)


def test_a_killed_run_never_replaces_a_finished_model(train_inputs, tmp_path):
    """Killed after epoch 1 of 3 of a second run: m.pt is still the first run's finished
    model, byte for byte; the unfinished state is m.pt.partial, which every reader refuses
    with one line naming --resume; --resume finishes it."""
    from pipeline.artifacts import ArtifactError
    from pipeline.inference import load_head

    fs, det, gt, lm = train_inputs
    out = tmp_path / "m.pt"
    train.run(train.TrainConfig(epochs=2, batch_size=3), fs, det, gt, lm, out)
    before, log = out.read_bytes(), (tmp_path / "m.pt.log.csv").read_bytes()
    cfg = train.TrainConfig(epochs=3, batch_size=3, lr=0.05)
    with pytest.MonkeyPatch.context() as mp:
        _kill_after_epochs(mp, 1)
        with pytest.raises(KeyboardInterrupt):
            train.run(cfg, fs, det, gt, lm, out)
    assert out.read_bytes() == before and (tmp_path / "m.pt.log.csv").read_bytes() == log
    assert len((tmp_path / "m.pt.log.csv.partial").read_text().splitlines()) == 2
    partial = tmp_path / "m.pt.partial"
    for read in (load_checkpoint, lambda p: load_head(load_checkpoint(p), p),
                 lambda p: train.init_from(build_head("linear", 8, 4), p)):
        with pytest.raises(ArtifactError) as err:
            read(partial)
        msg = str(err.value)
        assert msg.startswith(f"{partial}: an unfinished training run (epoch 1 of 3)")
        assert "--resume" in msg and "\n" not in msg
    train.run(cfg, fs, det, gt, lm, out, resume=True)
    assert not partial.exists() and not (tmp_path / "m.pt.log.csv.partial").exists()
    assert len((tmp_path / "m.pt.log.csv").read_text().splitlines()) == 4
    resumed = load_checkpoint(out)
    train.run(cfg, fs, det, gt, lm, tmp_path / "straight.pt")
    straight = load_checkpoint(tmp_path / "straight.pt")
    for k in straight["state_dict"]:
        torch.testing.assert_close(resumed["state_dict"][k], straight["state_dict"][k],
                                   rtol=0, atol=0)


def test_an_unfinished_checkpoint_at_the_output_path_is_refused_by_eval(train_inputs, tmp_path):
    """A checkpoint written before this fix (complete: False at the final path)."""
    from pipeline import evaluate
    from pipeline.artifacts import ArtifactError
    from pipeline.artifacts.checkpoint import save_checkpoint

    fs, det, gt, lm = train_inputs
    train.run(train.TrainConfig(epochs=1, batch_size=3), fs, det, gt, lm, tmp_path / "m.pt")
    ckpt = load_checkpoint(tmp_path / "m.pt")
    ckpt["train"] = {**ckpt["train"], "complete": False}
    save_checkpoint(ckpt, tmp_path / "old.pt")
    with pytest.raises(ArtifactError, match=r"old.pt: an unfinished training run .*--resume"):
        evaluate.run(evaluate.EvalConfig(), tmp_path / "old.pt", fs, det, gt, lm,
                     tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()


def _poison(url: str, video: str, index: int) -> None:
    from pipeline.artifacts.features import FeatureStore

    store = FeatureStore(url, mode="a")
    for view in store.spec(video).views:
        arr = store.group(video)[view]
        row = np.asarray(arr[index])
        row.flat[0] = np.nan
        arr[index] = row


@pytest.mark.parametrize("with_val", [False, True])
def test_one_nan_stops_training_with_one_line_naming_the_keyframe(train_inputs, tmp_path,
                                                                  with_val):
    from pipeline.artifacts import ArtifactError

    fs, det, gt, lm = train_inputs
    out = tmp_path / "m.pt"
    cfg = train.TrainConfig(epochs=2, batch_size=3)
    train.run(cfg, fs, det, gt, lm, out)
    before = out.read_bytes()
    _poison(fs, "vid_b", 1)                      # keyframe at t=2
    with pytest.raises(ArtifactError) as err:
        train.run(train.TrainConfig(epochs=2, batch_size=3, seed=1), fs, det, gt, lm, out,
                  val_annotations=gt if with_val else None)
    msg = str(err.value)
    assert msg.startswith(f"{fs}: training loss is nan at epoch 1, step ")
    assert "non-finite features in keyframes vid_b@2)" in msg and "\n" not in msg
    assert out.read_bytes() == before and not (tmp_path / "m.pt.partial").exists()


# ---- the checkpoint's features against the store's (issue 19, item 3) ------------------------

def test_eval_refuses_a_store_of_other_features_naming_the_fields(train_inputs, tmp_path):
    from pipeline import evaluate
    from pipeline.artifacts import ArtifactError
    from pipeline.artifacts.features import FeatureStore
    from tests.conftest import make_feature_store

    fs, det, gt, lm = train_inputs
    train.run(train.TrainConfig(epochs=1, batch_size=3), fs, det, gt, lm, tmp_path / "m.pt")
    small = str(tmp_path / "small.zarr")
    make_feature_store(small, {"vid_a": 4, "vid_b": 3})
    store = FeatureStore(small, mode="a")
    for v in store.videos():
        store.group(v).attrs["acar"] = {**store.attrs(v), "short_side": 80}
    wide = str(tmp_path / "wide.zarr")
    make_feature_store(wide, {"vid_a": 4, "vid_b": 3}, channels=16)
    for url, diff in ((small, "short_side 36 != 80"), (wide, "channels 8 != 16")):
        with pytest.raises(ArtifactError) as err:
            evaluate.run(evaluate.EvalConfig(), tmp_path / "m.pt", url, det, gt, lm,
                         tmp_path / "metrics.json")
        msg = str(err.value)
        assert "trained on other features than those of 'vid_a'" in msg and diff in msg
        assert "\n" not in msg and not (tmp_path / "metrics.json").exists()


def test_spec_differences_name_every_differing_field():
    from pipeline.artifacts.features import FeatureSpec
    from pipeline.inference import spec_differences

    a = FeatureSpec("r2plus1d_18", "kinetics", False, 8, 2, 120, 512, ("s120",), {"amp": False})
    b = FeatureSpec("x3d_s", "kinetics", False, 16, 2, 80, 192, ("s80", "s80_flip"),
                    {"amp": True})
    assert spec_differences(a, a.to_dict()) == []
    assert spec_differences(a.to_dict(), b) == [
        "backbone r2plus1d_18 != x3d_s", "short_side 120 != 80", "clip_frames 8 != 16",
        "channels 512 != 192", "views s120 != s80,s80_flip", "amp False != True"]
    assert spec_differences(a, b, extra=False)[-1] == "views s120 != s80,s80_flip"


def test_nan_features_of_a_val_keyframe_are_one_line_not_a_traceback(train_inputs, tmp_path):
    """Training keyframes are fine (vid_a); a val keyframe (vid_b) has a NaN feature."""
    from pipeline.artifacts import ArtifactError

    fs, det, gt, lm = train_inputs
    train_gt = tmp_path / "train_a.csv"
    write_annotations(boxes_gt({"vid_a": 4}), train_gt)
    _poison(fs, "vid_b", 0)
    with pytest.raises(ArtifactError) as err:
        train.run(train.TrainConfig(epochs=1, batch_size=3), fs, det, train_gt, lm,
                  tmp_path / "m.pt", val_annotations=gt)
    assert str(err.value).startswith(f"{fs}: non-finite scores (NaN or inf features?) at "
                                     "keyframes vid_b@1")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_truncated_shard_is_one_line_naming_the_store(tmp_path, in_memory):
    """A shard file cut short (a killed copy, a full disk) fails with one line that says
    which video and view, and how to find the others, not zarr's checksum traceback."""
    url = str(tmp_path / "f.zarr")
    make_feature_store(url, {"vid_a": 3})
    store = FeatureStore(url)
    view = store.spec("vid_a").views[0]
    shard = next(p for p in (tmp_path / "f.zarr" / "vid_a" / view).rglob("*")
                 if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cache = FeatureCache(store, view, in_memory=in_memory)
    with pytest.raises(ArtifactError, match=r"f\.zarr.*(unreadable data.*--check --values|"
                                            r"shard index checksum mismatch)") as err:
        cache.contexts([("vid_a", 0), ("vid_a", 1)])
    assert "\n" not in str(err.value)
