"""xarray opens every group of a feature store and of a bank (Zarr v3 ``dimension_names``);
pandas reads the Parquet and CSV artifacts as they are."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import bank
from pipeline.artifacts.annotations import read_annotations
from pipeline.artifacts.features import FeatureStore, ViewSpec
from tests.conftest import make_feature_store
from tests.test_bank import VIDEOS, acar_checkpoint
from tests.test_bank import world as world  # noqa: F401  (the fixture)

xr = pytest.importorskip("xarray")


def open_group(url: str, group: str):
    return xr.open_zarr(url, group=group, consolidated=False)


def test_xarray_opens_every_group_of_a_feature_store(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = make_feature_store(url, {"vid_a": 3, "vid_b": 2}, flip=True)
    # a view of another scale in vid_b: its own spatial dimensions, not a clash
    store.begin_video("vid_c", np.arange(1, 3), store.group("vid_a").attrs["acar"])
    for name, side in (("s36", 6), ("s48", 8)):
        vs = ViewSpec(name, 36, False, (8 * side, 8 * side), (0, 0, 8 * side, 8 * side), 8.0)
        store.create_view("vid_c", vs, (2, 8, side, side))[:] = 1
    store.finish_video("vid_c")
    for video in FeatureStore(url).videos():
        ds = open_group(url, video)
        assert ds["timestamps"].dims == ("keyframe",)
        k = ds.sizes["keyframe"]
        assert ds["s36"].dims == ("keyframe", "channel", "y", "x")
        assert ds["s36"].shape == (k, 8, 6, 6) and ds["s36"].dtype == np.float16
        np.testing.assert_array_equal(ds["s36"].values, FeatureStore(url).read(video, "s36"))
    assert set(open_group(url, "vid_a").data_vars) == {"timestamps", "s36", "s36_flip"}
    assert open_group(url, "vid_c")["s48"].dims == ("keyframe", "channel", "y_s48", "x_s48")


def test_xarray_opens_every_group_of_an_lfb_and_an_acfb_bank(world, tmp_path):  # noqa: F811
    features, dets, gt = world
    lfb, acfb = str(tmp_path / "lfb.zarr"), str(tmp_path / "acfb.zarr")
    bank.run(bank.BankConfig(kind="lfb"), features, dets, lfb)
    bank.run(bank.BankConfig(kind="acfb"), features, dets, acfb,
             acar_checkpoint(tmp_path / "acar.pt", features), [gt])
    for url, data, dims in ((lfb, "vectors", ("actor", "channel")),
                            (acfb, "maps", ("actor", "channel", "y", "x"))):
        for video in VIDEOS:
            ds = open_group(url, video)
            assert ds[data].dims == dims
            assert ds["boxes"].dims == ("actor", "coord") and ds.sizes["coord"] == 4
            for name in ("actor_timestamps", "actor_index", "scores", "from_gt"):
                assert ds[name].dims == ("actor",)
            assert ds["timestamps"].dims == ("keyframe",)
            assert ds.sizes["keyframe"] == VIDEOS[video] and ds.sizes["actor"] > 0
            ts = ds["actor_timestamps"].values
            assert (np.diff(ts) >= 0).all() and set(ts) <= set(ds["timestamps"].values)


def test_pandas_reads_the_parquet_and_csv_artifacts_directly(world):  # noqa: F811
    _, dets, gt = world
    df = pd.read_parquet(dets)
    assert {"video_id", "timestamp", "x1", "y1", "x2", "y2", "score"} <= set(df.columns)
    raw = pd.read_csv(gt, header=None)
    assert len(raw) == len(read_annotations(gt)) and raw.shape[1] >= 7
