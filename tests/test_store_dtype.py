"""``extract.dtype: int8``: quantised views, their scales, and every reader dequantising."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cli.main import cli
from pipeline import detect, extract, extract_check
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.features import (
    QMAX,
    FeatureSpec,
    FeatureStore,
    ViewSpec,
    dequantise,
    quantise,
    scale_name,
)
from pipeline.keyframes import FeatureCache, RowReader


def test_quantise_error_is_half_a_step_per_keyframe_and_channel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32) * np.array(
        [1e-3, 1.0, 30.0, 1.0])[None, :, None, None]
    x[1, 3] = 0.0                                      # an all-zero channel
    x[2, 1] = np.abs(x[2, 1])                          # a non-negative one (post-ReLU)
    q, scale = quantise(x)
    assert q.dtype == np.int8 and q.shape == x.shape
    assert scale.dtype == np.float16 and scale.shape == (3, 4)
    assert np.abs(q.astype(int)).max() <= QMAX
    assert scale[1, 3] == 0 and not q[1, 3].any()
    # each channel's largest magnitude maps to +-QMAX: the whole range is used
    assert (np.abs(q.astype(int)).reshape(3, 4, -1).max(axis=2)[scale > 0] >= QMAX - 1).all()
    back = dequantise(q, scale).astype(np.float32)
    step = scale.astype(np.float32)[..., None, None]
    # half a step, plus float16 rounding of the scale and of the result
    assert (np.abs(back - x) <= 0.5 * step + 2e-3 * np.abs(x) + 1e-7).all()
    assert dequantise(q[0], scale[0]).shape == (4, 5, 6)           # one keyframe


def _int8_store(url: str, data: np.ndarray) -> FeatureStore:
    spec = FeatureSpec("test", "random", True, 4, 1, 36, data.shape[1], ("s36",),
                       {"dtype": "int8"})
    store = FeatureStore(url, mode="a")
    store.begin_video("v", np.arange(1, len(data) + 1),
                      {**spec.to_dict(), "frame_size": [64, 48], "fps": 8.0})
    view = ViewSpec("s36", 36, False, (48, 48), (0, 0, 48, 36), 8.0)
    arr = store.create_view("v", view, data.shape, "int8")
    for s in range(0, len(data), 3):                   # partial writes, as extract's batches
        store.write_rows("v", arr, s, data[s:s + 3])
    store.finish_video("v")
    return FeatureStore(url)


def test_int8_store_round_trip_and_every_reader_dequantises(tmp_path):
    rng = np.random.default_rng(1)
    data = np.maximum(rng.standard_normal((40, 8, 6, 6)), 0).astype(np.float16)   # 2 shards
    url = str(tmp_path / "f.zarr")
    store = _int8_store(url, data)
    grp = store.group("v")
    assert grp["s36"].dtype == np.int8 and grp[scale_name("s36")].shape == (40, 8)
    assert grp["s36"].attrs["acar"]["encoding"]["dtype"] == "int8"
    assert store.view("v", "s36").name == "s36"             # the ViewSpec still reads
    q, scale = quantise(data)
    expected = dequantise(q, scale)
    full = store.read("v", "s36")
    assert full.dtype == np.float16
    np.testing.assert_array_equal(full, expected)
    np.testing.assert_array_equal(store.read("v", "s36", 7), expected[7])
    assert np.abs(full.astype(np.float32) - data).max() <= scale.max() * 0.51
    keys = [("v", k) for k in (3, 4, 5, 31, 32, 39)]         # a run across the shard edge
    for in_memory in (True, False):
        cache = FeatureCache(store, "s36", in_memory=in_memory)
        maps = cache.contexts(keys)
        for (_, k), m in zip(keys, maps, strict=True):
            assert m.dtype == np.float16
            np.testing.assert_array_equal(m, expected[k])
        np.testing.assert_array_equal(cache.context("v", 39), expected[39])
    assert RowReader(grp["s36"]).rows == 32                  # the fast path is taken
    zcache = FeatureCache(store, "s36", in_memory=False)
    zcache.reader = lambda arr: arr                          # zarr's own reads
    np.testing.assert_array_equal(zcache.contexts(keys)[0], expected[3])
    # in memory it stays int8: 1 byte per value plus a float16 per (keyframe, channel)
    assert FeatureCache(store, "s36").nbytes(["v"]) == data.size + 2 * 40 * 8


def test_int8_check_and_its_missing_scales(tmp_path):
    data = np.ones((3, 8, 6, 6), np.float16)
    url = str(tmp_path / "f.zarr")
    _int8_store(url, data)
    report = extract_check.check_store(url, values=True)
    assert report.ok, report.lines()
    store = FeatureStore(url, mode="a")
    store.group("v")[scale_name("s36")][1] = np.full(8, np.inf, np.float16)
    report = extract_check.check_store(url, values=True)
    assert any("non-finite values" in line and "t=2" in line for line in report.lines())
    del store.group("v")[scale_name("s36")]
    lines = extract_check.check_store(url).lines()
    assert lines == ["v: view s36: int8 view without its scale array"]
    with pytest.raises(ArtifactError, match="has no 's36_scale' array"):
        FeatureStore(url).read("v", "s36")


def test_float16_spec_says_int8_is_flagged(tmp_path):
    """A view whose dtype is not the one its spec records is inconsistent."""
    data = np.ones((3, 8, 6, 6), np.float16)
    url = str(tmp_path / "f.zarr")
    _int8_store(url, data)
    grp = zarr.open_group(url, mode="a")["v"]
    grp.attrs["acar"] = {**grp.attrs["acar"], "extra": {}}
    assert "v: view s36: dtype int8, expected float16" in extract_check.check_store(url).lines()


@pytest.fixture(scope="module")
def world_dets(synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", out,
               [synth_world / "train.csv", synth_world / "val.csv"])
    return synth_world, out


CFG = extract.ExtractConfig(backbone="mc3_18", random_init=True, clip_frames=4, clip_stride=2,
                            clip_fps=8, short_side=16, batch_size=2, num_workers=0)


def test_extract_int8_is_the_float16_store_quantised(world_dets, tmp_path):
    world, dets = world_dets
    f16, i8 = str(tmp_path / "f16.zarr"), str(tmp_path / "i8.zarr")
    assert extract.run(CFG, world / "videos", dets, f16) == []
    res = CliRunner().invoke(cli, ["extract", "--videos", str(world / "videos"), "--detections",
                                   str(dets), "--out", i8, "--backbone", "mc3_18",
                                   "--random-init", "--clip-frames", "4", "--clip-stride", "2",
                                   "--clip-fps", "8", "--short-side", "16", "--batch-size", "2",
                                   "--num-workers", "0", "--dtype", "int8"])
    assert res.exit_code == 0, res.output
    a, b = FeatureStore(f16), FeatureStore(i8)
    assert b.videos() == a.videos() == ["train_000", "train_001", "val_000"]
    for v in a.videos():
        assert b.spec(v).extra["dtype"] == "int8" and "dtype" not in a.spec(v).extra
        assert b.group(v)["s16"].dtype == np.int8
        ref = a.read(v, "s16")
        np.testing.assert_array_equal(b.read(v, "s16"), dequantise(*quantise(ref)))
    assert extract_check.check_store(i8, dets, world / "videos", values=True).ok
    # the spec records the dtype: a float16 rerun on the int8 store redoes every video
    assert extract.run(CFG, world / "videos", dets, i8) == []
    assert FeatureStore(i8).group("val_000")["s16"].dtype == np.float16
    with pytest.raises(ArtifactError, match="extract.dtype 'int4' is not one of"):
        extract.run(extract.ExtractConfig(**{**CFG.__dict__, "dtype": "int4"}),
                    world / "videos", dets, i8)


def test_extract_float32_stores_the_maps_exactly(world_dets, tmp_path):
    """float32: the maps as the backbone computed them (a float16 store rounds them to
    ~5e-4 relative, what an imported reference model's 1e-4 check cannot afford)."""
    world, dets = world_dets
    f16, f32 = str(tmp_path / "f16.zarr"), str(tmp_path / "f32.zarr")
    assert extract.run(CFG, world / "videos", dets, f16) == []
    assert extract.run(extract.ExtractConfig(**{**CFG.__dict__, "dtype": "float32"}),
                       world / "videos", dets, f32) == []
    a, b = FeatureStore(f16), FeatureStore(f32)
    for v in a.videos():
        assert b.spec(v).extra["dtype"] == "float32" and b.group(v)["s16"].dtype == np.float32
        full, half = b.read(v, "s16"), a.read(v, "s16")
        assert full.dtype == np.float32
        np.testing.assert_array_equal(full.astype(np.float16), half)   # same maps, rounded
        assert np.abs(full - half.astype(np.float32)).max() > 0          # which float32 keeps
        # the same features, stored otherwise: a head trained on one scores the other
        from pipeline.inference import spec_differences

        assert spec_differences(a.spec(v), b.spec(v)) == []
        other = type(a.spec(v)).from_dict({**a.spec(v).to_dict(), "short_side": 99})
        assert spec_differences(other, b.spec(v)) == ["short_side 99 != 16"]
    assert extract_check.check_store(f32, dets, world / "videos", values=True).ok
