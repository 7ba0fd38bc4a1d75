import numpy as np
import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.features import (
    FeatureSpec,
    FeatureStore,
    ViewSpec,
    boxes_to_input,
)


def test_round_trip(tmp_path):
    url = str(tmp_path / "f.zarr")
    spec = FeatureSpec("r3d_18", "random-init(seed=0)", True, 8, 2, 64, 4, ("s64",))
    store = FeatureStore(url, mode="a")
    store.begin_video("v", np.array([1, 2, 3]), {**spec.to_dict(), "fps": 8.0})
    view = ViewSpec("s64", 64, False, (96, 96), (0, 0, 85, 64), 16.0)
    data = np.random.default_rng(0).standard_normal((3, 4, 6, 6)).astype(np.float16)
    arr = store.create_view("v", view, data.shape)
    assert arr.chunks == (1, 4, 6, 6) and arr.shards == (3, 4, 6, 6)
    arr[:] = data
    assert not FeatureStore(url).is_complete("v")
    assert FeatureStore(url).videos() == []
    store.finish_video("v")
    back = FeatureStore(url)
    assert back.videos() == ["v"]
    assert back.spec("v") == spec
    assert back.view("v", "s64") == view
    np.testing.assert_array_equal(back.timestamps("v"), [1, 2, 3])
    np.testing.assert_array_equal(back.read("v", "s64"), data)
    np.testing.assert_array_equal(back.read("v", "s64", 1), data[1])


def test_a_read_only_store_opens_each_array_once_and_a_writer_sees_new_ones(tmp_path):
    url = str(tmp_path / "f.zarr")
    writer = FeatureStore(url, mode="a")
    writer.begin_video("v", np.array([1, 2]), {"backbone": "x"})
    view = ViewSpec("s64", 64, False, (96, 96), (0, 0, 85, 64), 16.0)
    writer.create_view("v", view, (2, 3, 4, 4))[:] = np.ones((2, 3, 4, 4), np.float16)
    writer.finish_video("v")
    reader = FeatureStore(url)
    assert reader.videos() == ["v"]
    assert reader.array("v", "s64") is reader.array("v", "s64")        # opened once
    assert reader.group("v") is reader.group("v")
    assert writer.timestamps("v").tolist() == [1, 2]                    # writer: not kept
    writer.begin_video("v", np.array([7]), {"backbone": "x"})           # rewritten
    assert writer.timestamps("v").tolist() == [7]
    with pytest.raises(KeyError):
        reader.array("v", "s999")
    with pytest.raises(ArtifactError, match="video 'w' is not in the store"):
        reader.group("w")


def test_works_on_fsspec_memory_url():
    store = FeatureStore("memory://acar-test/f.zarr", mode="a")
    store.begin_video("v", np.array([5]), {"backbone": "x"})
    store.finish_video("v")
    assert FeatureStore("memory://acar-test/f.zarr").videos() == ["v"]


def test_wrong_kind_and_missing_store(tmp_path):
    FeatureStore(str(tmp_path / "bank.zarr"), mode="a", kind="bank")
    with pytest.raises(ArtifactError, match="not an acar features store"):
        FeatureStore(str(tmp_path / "bank.zarr"))
    with pytest.raises(ArtifactError, match="no Zarr store"):
        FeatureStore(str(tmp_path / "missing.zarr"))


def test_boxes_to_input_hand_computed():
    # 320x240 frame scaled to short side 120 -> 160x120, placed at (0, 0) of a 160x160 input.
    view = ViewSpec("s120", 120, False, (160, 160), (0, 0, 160, 120), 16.0)
    box = np.array([[0.25, 0.5, 0.75, 1.0]])
    np.testing.assert_allclose(boxes_to_input(box, view), [[40, 60, 120, 120]])
    flipped = ViewSpec("s120_flip", 120, True, (160, 160), (0, 0, 160, 120), 16.0)
    np.testing.assert_allclose(boxes_to_input(np.array([[0.1, 0.5, 0.3, 1.0]]), flipped),
                               [[112, 60, 144, 120]])
    offset = ViewSpec("c", 120, False, (160, 160), (20, 10, 140, 130), 16.0)
    np.testing.assert_allclose(boxes_to_input(box, offset), [[50, 70, 110, 130]])


def test_views_are_sharded_into_few_files(tmp_path):
    from pipeline.artifacts.features import SHARD_KEYFRAMES

    store = FeatureStore(str(tmp_path / "f.zarr"), mode="a")
    k = 2 * SHARD_KEYFRAMES + 5
    store.begin_video("v", np.arange(k), {})
    view = ViewSpec("s64", 64, False, (64, 64), (0, 0, 64, 48), 16.0)
    arr = store.create_view("v", view, (k, 2, 4, 4))
    data = np.arange(k * 32, dtype=np.float16).reshape(k, 2, 4, 4)
    for s in range(0, k, 7):                       # unaligned partial writes still land
        arr[s:s + 7] = data[s:s + 7]
    store.finish_video("v")
    shard_files = [p for p in (tmp_path / "f.zarr" / "v" / "s64").rglob("*")
                   if p.is_file() and p.name != "zarr.json"]
    assert len(shard_files) == 3
    np.testing.assert_array_equal(FeatureStore(str(tmp_path / "f.zarr")).read("v", "s64"), data)
    np.testing.assert_array_equal(FeatureStore(str(tmp_path / "f.zarr")).read("v", "s64", 40),
                                  data[40])
