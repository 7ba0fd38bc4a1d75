import numpy as np
import pytest

from pipeline import detect, extract
from pipeline.artifacts.features import FeatureStore
from pipeline.video import VideoInfo


def _info(n, fps=10.0):
    return VideoInfo(None, n, fps, 64, 48)


def test_clip_indices_centred_and_clamped():
    idx = extract.clip_indices(5.0, _info(100), frames=4, stride=2)
    assert idx.tolist() == [46, 48, 50, 52]
    assert extract.clip_indices(0.0, _info(100), 4, 2).tolist() == [0, 2, 4, 6]
    assert extract.clip_indices(9.9, _info(100), 4, 2).tolist() == [93, 95, 97, 99]
    assert extract.clip_indices(1.0, _info(3), 4, 2).tolist() == [0, 2, 2, 2]


def test_preprocess_pads_to_square_and_records_valid_region():
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    x, size, valid = extract.preprocess(frames, 36, False, 16, (0.5,) * 3, (0.25,) * 3)
    assert x.shape == (3, 2, 48, 48) and size == (48, 48) and valid == (0, 0, 48, 36)
    assert float(x[:, :, 36:].abs().max()) == 0.0          # zero padding below the image


@pytest.fixture(scope="module")
def world_and_dets(synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", out,
               [synth_world / "train.csv", synth_world / "val.csv"])
    return synth_world, out


CFG = extract.ExtractConfig(backbone="r3d_18", random_init=True, clip_frames=4, clip_stride=2,
                            short_side=32, batch_size=4)


def test_extract_writes_store_and_resumes(world_and_dets, tmp_path):
    world, dets = world_and_dets
    url = str(tmp_path / "f.zarr")
    assert extract.run(CFG, world / "videos", dets, url) == []
    store = FeatureStore(url)
    assert store.videos() == ["train_000", "train_001", "val_000"]
    spec = store.spec("val_000")
    assert spec.random_init and spec.weights == "random-init(seed=0)" and spec.views == ("s32",)
    feats = store.read("val_000", "s32")
    assert feats.dtype == np.float16 and feats.shape == (3, 512, 4, 4)
    view = store.view("val_000", "s32")
    assert view.valid == (0, 0, 48, 32) and view.input_size == (64, 64)
    assert view.feature_stride == 16.0
    np.testing.assert_array_equal(store.timestamps("val_000"), [1, 2, 3])
    # an interrupted video (incomplete marker) is redone; complete ones are kept
    grp = FeatureStore(url, mode="a").group("train_001")
    grp.attrs["acar"] = {**dict(grp.attrs["acar"]), "complete": False}
    before = store.read("train_000", "s32")
    extract.run(CFG, world / "videos", dets, url)
    after = FeatureStore(url)
    assert after.is_complete("train_001")
    np.testing.assert_array_equal(after.read("train_000", "s32"), before)


def test_extract_is_deterministic_and_spec_change_redoes(world_and_dets, tmp_path):
    world, dets = world_and_dets
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    extract.run(CFG, world / "videos", dets, a, shard=(0, 2))
    extract.run(CFG, world / "videos", dets, a, shard=(1, 2))
    extract.run(CFG, world / "videos", dets, b)
    for v in FeatureStore(b).videos():
        np.testing.assert_array_equal(FeatureStore(a).read(v, "s32"),
                                      FeatureStore(b).read(v, "s32"))
    flipped = extract.ExtractConfig(**{**CFG.__dict__, "flip": True})
    extract.run(flipped, world / "videos", dets, b)
    assert FeatureStore(b).spec("val_000").views == ("s32", "s32_flip")
