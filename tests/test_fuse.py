"""Stage fuse: fused maps are the concat / sum of the inputs; every mismatch is one line;
nothing half-written; a rerun reuses, a changed source rebuilds; a head's spec check
rejects another fusion."""

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from pipeline import fuse
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.features import FeatureSpec, FeatureStore, ViewSpec
from pipeline.inference import spec_differences

VIEWS = (("s160", 160, False), ("s160_flip", 160, True))


def make_store(path, channels=3, videos=("a", "b"), stamps=(1, 2, 3), grid=(4, 4),
               views=VIEWS, valid=(0, 0, 160, 120), stride=40.0, seed=0, backbone="x",
               dtype="float16", frame_size=(160, 120), time_offset=0.0, temporal=None):
    """A tiny complete store; maps (K, C, [N,] H, W) of seeded random values."""
    rng = np.random.default_rng(seed)
    store = FeatureStore(str(path), mode="a")
    extra = {"clip_fps": None, "pad_multiple": 40, "time_offset": time_offset}
    if dtype != "float16":
        extra["dtype"] = dtype
    spec = FeatureSpec(backbone, "non-learned", False, 8, 2, 160, channels,
                       tuple(v[0] for v in views), extra)
    for v in videos:
        ts = np.asarray(stamps, np.int32)
        store.begin_video(v, ts, {**spec.to_dict(), "frame_size": list(frame_size), "fps": 8.0,
                                  "source": f"{v}.mp4:1"})
        for name, scale, flip in views:
            vs = ViewSpec(name, scale, flip, (160, 160), valid, stride)
            shape = (len(ts), channels, *((temporal,) if temporal else ()), *grid)
            arr = store.create_view(v, vs, shape, dtype)
            store.write_rows(v, arr, 0, rng.standard_normal(shape).astype(np.float32))
        store.finish_video(v)
    return store


@pytest.fixture
def pair(tmp_path):
    a = make_store(tmp_path / "a.zarr", channels=3, seed=1, backbone="hoghof")
    b = make_store(tmp_path / "b.zarr", channels=2, seed=2, backbone="flow")
    return a, b, tmp_path


def test_concat_is_the_channel_concatenation_of_the_inputs(pair):
    a, b, tmp = pair
    counts = fuse.run(fuse.FuseConfig("concat"), a.url, b.url, tmp / "f.zarr")
    assert counts == {"videos": 2, "reused": 0, "keyframes": 6}
    f = FeatureStore(str(tmp / "f.zarr"))
    assert f.videos() == ["a", "b"]
    for v in ("a", "b"):
        for view, *_ in VIEWS:
            got = f.read(v, view)
            assert got.shape == (3, 5, 4, 4) and got.dtype == np.float16
            np.testing.assert_array_equal(got, np.concatenate([a.read(v, view),
                                                               b.read(v, view)], 1))
            assert f.view(v, view) == a.view(v, view)
        np.testing.assert_array_equal(f.timestamps(v), a.timestamps(v))
    spec = f.spec("a")
    assert spec.channels == 5 and spec.views == a.spec("a").views
    assert spec.extra["fuse"]["mode"] == "concat"
    assert [FeatureSpec.from_dict(s) for s in spec.extra["fuse"]["sources"]] == \
        [a.spec("a"), b.spec("a")]
    assert spec.extra["pad_multiple"] == 40          # the keys both sources share


def test_add_is_the_sum_of_the_inputs(tmp_path):
    a = make_store(tmp_path / "a.zarr", channels=3, seed=1)
    b = make_store(tmp_path / "b.zarr", channels=3, seed=2)
    fuse.run(fuse.FuseConfig("add"), a.url, b.url, tmp_path / "f.zarr")
    f = FeatureStore(str(tmp_path / "f.zarr"))
    want = a.read("b", "s160").astype(np.float32) + b.read("b", "s160").astype(np.float32)
    np.testing.assert_array_equal(f.read("b", "s160"), want.astype(np.float16))
    assert f.spec("b").channels == 3 and f.spec("b").extra["fuse"]["mode"] == "add"


def test_temporal_bins_and_int8_sources_fuse_too(tmp_path):
    a = make_store(tmp_path / "a.zarr", channels=3, temporal=2, dtype="int8", seed=1)
    b = make_store(tmp_path / "b.zarr", channels=2, temporal=2, seed=2)
    fuse.run(fuse.FuseConfig("concat"), a.url, b.url, tmp_path / "f.zarr")
    f = FeatureStore(str(tmp_path / "f.zarr"))
    got = f.read("a", "s160")                                       # (K, C, N, H, W)
    assert got.shape == (3, 5, 2, 4, 4)
    np.testing.assert_array_equal(got, np.concatenate([a.read("a", "s160"),
                                                       b.read("a", "s160")], 1))
    assert "dtype" not in f.spec("a").extra                         # float16 output


@pytest.mark.parametrize("change, match", [
    (dict(videos=("a",)), r"/b\.zarr: lacks 1 complete videos.*a\.zarr \(b\).*same videos"),
    (dict(videos=("a", "b", "c")), r"/a\.zarr: lacks 1 complete videos.*b\.zarr \(c\)"),
    (dict(stamps=(1, 2, 4)), r"b\.zarr.*video 'a': other keyframes"),
    (dict(frame_size=(320, 240)), r"b\.zarr.*video 'a': frame size"),
    (dict(time_offset=900.0), r"b\.zarr.*video 'a': time_offset 900.0 != 0.0"),
    (dict(views=VIEWS[:1]), r"b\.zarr.*views \['s160'\] != \['s160', 's160_flip'\].*scales "
                            "and flips"),
    (dict(views=(("s160", 160, False), ("s160_flip", 160, False))),
     r"view 's160_flip': flip False != True"),
    (dict(grid=(4, 5)), r"b\.zarr.*video 'a' view 's160': grid 4x5 != 4x4"),
    (dict(temporal=2), r"grid 2x4x4 != 4x4"),
    (dict(valid=(0, 0, 160, 160)), r"valid region \(0, 0, 160, 160\) != \(0, 0, 160, 120\)"),
    (dict(stride=20.0), r"feature stride 20.0 != 40.0"),
    (dict(channels=2), r"2 channels != 3.*--mode add needs the same C"),
])
def test_every_mismatch_is_one_line_naming_the_store_and_nothing_is_written(
        tmp_path, change, match):
    a = make_store(tmp_path / "a.zarr", channels=3, seed=1)
    b = make_store(tmp_path / "b.zarr", **{"channels": 3, "seed": 2, **change})
    with pytest.raises(ArtifactError, match=match) as err:
        fuse.run(fuse.FuseConfig("add"), a.url, b.url, tmp_path / "f.zarr")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "f.zarr").exists()


def test_incomplete_source_videos_do_not_count_and_the_output_is_not_an_input(tmp_path):
    a = make_store(tmp_path / "a.zarr", seed=1)
    b = make_store(tmp_path / "b.zarr", seed=2)
    b.begin_video("b", np.array([1, 2, 3]), {**b.spec("a").to_dict()})   # interrupted
    with pytest.raises(ArtifactError, match=r"/b\.zarr: lacks 1 complete videos.*\(b\)"):
        fuse.run(fuse.FuseConfig("concat"), a.url, b.url, tmp_path / "f.zarr")
    with pytest.raises(ArtifactError, match="another store than the inputs"):
        fuse.run(fuse.FuseConfig("concat"), a.url, a.url, a.url)
    with pytest.raises(ArtifactError, match="fuse.mode.*'mean' is not one of concat, add"):
        fuse.FuseConfig("mean")


def test_interrupted_run_is_resumed_and_unchanged_videos_are_reused(pair, monkeypatch):
    a, b, tmp = pair
    out = tmp / "f.zarr"
    real = FeatureStore.finish_video
    calls = []

    def crash_on_second(self, video, **kw):
        calls.append(video)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(self, video, **kw)

    monkeypatch.setattr(FeatureStore, "finish_video", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        fuse.run(fuse.FuseConfig("concat"), a.url, b.url, out)
    monkeypatch.setattr(FeatureStore, "finish_video", real)
    f = FeatureStore(str(out))
    assert f.videos() == ["a"] and f.videos(complete_only=False) == ["a", "b"]
    assert fuse.run(fuse.FuseConfig("concat"), a.url, b.url, out)["reused"] == 1
    assert FeatureStore(str(out)).videos() == ["a", "b"]
    assert fuse.run(fuse.FuseConfig("concat"), a.url, b.url, out)["reused"] == 2


def test_a_changed_source_or_mode_rebuilds_and_a_head_sees_the_difference(pair):
    a, b, tmp = pair
    out = tmp / "f.zarr"
    fuse.run(fuse.FuseConfig("concat"), a.url, b.url, out)
    old = FeatureStore(str(out)).spec("a")
    b2 = make_store(tmp / "b2.zarr", channels=2, seed=3, backbone="flow2")
    assert fuse.run(fuse.FuseConfig("concat"), a.url, b2.url, out)["reused"] == 0
    new = FeatureStore(str(out)).spec("a")
    np.testing.assert_array_equal(FeatureStore(str(out)).read("a", "s160")[:, 3:],
                                  b2.read("a", "s160"))
    diff = spec_differences(old, new)          # what eval says to a head trained on the old
    assert any(d.startswith("backbone fuse(hoghof,flow) != fuse(hoghof,flow2)") for d in diff)
    assert any(d.startswith("fuse ") for d in diff)
    # a removed video is removed from the fusion too
    c = make_store(tmp / "c.zarr", channels=3, seed=1, videos=("a",))
    d = make_store(tmp / "d.zarr", channels=2, seed=2, videos=("a",))
    fuse.run(fuse.FuseConfig("concat"), c.url, d.url, out)
    assert FeatureStore(str(out)).videos(complete_only=False) == ["a"]


def test_cli_fuse_and_its_errors(pair):
    a, b, tmp = pair
    r = CliRunner().invoke(cli, ["fuse", a.url, b.url, "--out", str(tmp / "f.zarr")])
    assert r.exit_code == 0, r.output
    assert FeatureStore(str(tmp / "f.zarr")).spec("a").channels == 5
    r = CliRunner().invoke(cli, ["fuse", a.url, b.url, "--out", str(tmp / "g.zarr"),
                                 "--mode", "add"])
    assert r.exit_code != 0 and "--mode add needs the same C" in str(r.exception)
