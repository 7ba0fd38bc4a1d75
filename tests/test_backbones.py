"""The backbone registry: every torchvision video model cut to a spatio-temporal map,
weights from files / torchvision names / explicit random init, res5 dilation; the
non-learned HOG/HOF/colour descriptor ``hoghof``; the package layout (one module per
family).  I3D has its own file, tests/test_i3d.py."""

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import video as tvv

import pipeline.backbones as backbones_pkg
from pipeline.artifacts import ArtifactError
from pipeline.backbones import BACKBONES, build_backbone, feature_stride
from pipeline.backbones import hoghof as baseline_backbone
from pipeline.backbones import torchvision as backbones

NAMES = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t", "swin3d_s",
         "swin3d_b"]


@pytest.fixture
def fast_init(monkeypatch):
    """Swin/MViT spend seconds in trunc_normal_; the values do not matter for shapes."""
    def normal(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
        with torch.no_grad():
            return t.normal_(mean, std)

    monkeypatch.setattr(torch.nn.init, "trunc_normal_", normal)


def test_registry_is_a_plain_dict_with_kinetics_weights_and_their_normalisation():
    assert isinstance(BACKBONES, dict)
    assert sorted(BACKBONES) == sorted([*NAMES, "hoghof", "flow", "i3d", "i3d_mixed_4f",
                                        "slowfast_r50", "slowfast_r50_16x8", "slowfast_r101",
                                        "slowfast_r101_16x8"])
    for name in NAMES:
        bb = BACKBONES[name]
        assert bb.family == "torchvision" and bb.classifier is not None
        enum = bb.weights_enum
        assert "Kinetics" in enum.meta["_docs"] or "KINETICS" in str(enum), name
        assert bb.mean == tuple(enum.transforms().mean) and len(bb.std) == 3


@pytest.mark.parametrize("name", NAMES)
def test_trunk_gives_a_spatio_temporal_map(name, fast_init):
    net, bb, identity = build_backbone(name, random_init=True, seed=1)
    assert identity == "random-init(seed=1)" and not net.training
    t = max(4, bb.min_frames)
    with torch.inference_mode():
        y = net(torch.randn(1, 3, t, 32, 64))
    assert y.ndim == 5 and y.shape[0] == 1 and y.shape[1] == bb.channels
    assert tuple(y.shape[-2:]) == (32 // bb.stride, 64 // bb.stride)
    assert torch.isfinite(y).all()


def test_mvit_trunk_matches_torchvision_and_runs_at_other_sizes(fast_init):
    torch.manual_seed(0)
    net = tvv.mvit_v2_s().eval()
    # torchvision's forward takes its token grid from here (16x224x224 -> 8x56x56); v2 has
    # no absolute position parameters, so a small grid runs the same code on a small clip
    net.pos_encoding.spatial_size, net.pos_encoding.temporal_size = (16, 16), 2
    trunk = backbones.MViTTrunk(net)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.inference_mode():
        tokens, thw = trunk.tokens(x)
        torch.testing.assert_close(net.head(tokens[:, 0]), net(x))
        assert thw == (2, 2, 2)
        fmap = trunk(x)
        assert fmap.shape == (2, 768, 2, 2, 2)
        torch.testing.assert_close(fmap[:, :, 1, 0, 1], tokens[:, 1 + 1 * 4 + 0 * 2 + 1])
        assert trunk(torch.randn(1, 3, 6, 96, 64)).shape == (1, 768, 3, 3, 2)


def test_dilate_last_halves_the_stride_and_keeps_the_weights():
    plain, bb, _ = build_backbone("r2plus1d_18", random_init=True)
    dilated, _, _ = build_backbone("r2plus1d_18", random_init=True, dilate_last=True)
    # the same weights and the same layers 1-3; layer4's convs dilate instead of striding
    assert feature_stride(bb) == 16 and feature_stride(bb, True) == 8
    a, b = plain.state_dict(), dilated.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.inference_mode():
        assert plain(x).shape[-2:] == (2, 2) and dilated(x).shape[-2:] == (4, 4)
        # layers 1-3 are untouched: the input of layer4 is identical
        stem = lambda n: n.layer3(n.layer2(n.layer1(n.stem(x))))  # noqa: E731
        torch.testing.assert_close(stem(plain), stem(dilated))
    convs = [m for m in dilated.layer4.modules() if isinstance(m, torch.nn.Conv3d)]
    assert all(c.stride[1:] == (1, 1) for c in convs)
    assert any(c.dilation[1:] == (2, 2) for c in convs)
    with pytest.raises(ArtifactError, match="ResNet-style"):
        build_backbone("s3d", random_init=True, dilate_last=True)


def test_random_init_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, _, _ = build_backbone("mc3_18", random_init=True, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b, _, _ = build_backbone("mc3_18", random_init=True, seed=5)
    c, _, _ = build_backbone("mc3_18", random_init=True, seed=6)
    w = "stem.0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    with pytest.raises(ArtifactError, match="exclude each other"):
        build_backbone("mc3_18", weights="x.pt", random_init=True)


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(3)
    full = tvv.mc3_18(num_classes=80)            # e.g. fine-tuned on AVA: another head
    path = tmp_path / "mc3.pth"
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in full.state_dict().items()}},
               path)
    net, _, identity = build_backbone("mc3_18", weights=str(path))
    assert identity.startswith("file:mc3.pth:") and len(identity.split(":")[-1]) == 16
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), backbones.VideoResNetTrunk(full.eval())(x))
    with pytest.raises(ArtifactError, match="do not fit r3d_18"):
        build_backbone("r3d_18", weights=str(path))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="junk.pt: not a loadable weights file"):
        build_backbone("mc3_18", weights=str(tmp_path / "junk.pt"))
    with pytest.raises(ArtifactError, match="weights file not found"):
        build_backbone("mc3_18", weights=str(tmp_path / "missing.pth"))


def test_torchvision_names_and_offline_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))     # empty cache

    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    with pytest.raises(ArtifactError) as err:
        build_backbone("r3d_18")
    msg = str(err.value)
    assert msg.startswith("R3D_18_Weights.KINETICS400_V1: cannot download")
    assert "--weights PATH" in msg and "r3d_18-b3b3357e.pth" in msg and "\n" not in msg
    with pytest.raises(ArtifactError, match="cannot download"):
        build_backbone("r3d_18", weights="KINETICS400_V1")
    with pytest.raises(ArtifactError, match="another model"):
        build_backbone("r3d_18", weights="MC3_18_Weights.KINETICS400_V1")
    with pytest.raises(ArtifactError, match="neither a weights file nor"):
        build_backbone("r3d_18", weights="IMAGENET")
    with pytest.raises(ArtifactError, match="unknown backbone"):
        build_backbone("resnet50")


# ---- hoghof: the non-learned descriptor -----------------------------------------------------

def _clip(frames: list[torch.Tensor]) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> (1, 3, T, H, W) normalised as extract does for hoghof."""
    bb = BACKBONES["hoghof"]
    x = torch.stack(frames).permute(1, 0, 2, 3)[None]
    mean, std = torch.tensor(bb.mean).view(1, 3, 1, 1, 1), torch.tensor(bb.std).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def _square(dx: int, t_max: int = 8, size: int = 80, side: int = 20, colour=(1.0, 1.0, 1.0),
            background: float = 0.2) -> torch.Tensor:
    """A square moving ``dx`` px per frame on a plain background, over cell (1, 1) mid-clip."""
    frames = []
    for t in range(t_max):
        f = torch.full((3, size, size), background)
        x0 = 20 + dx * t - (dx * t_max) // 2
        f[:, 20:20 + side, x0:x0 + side] = torch.tensor(colour).view(3, 1, 1)
        frames.append(f)
    return _clip(frames)


def _moving_shapes(batch: int = 4, t_max: int = 8, size: int = 160, seed: int = 0):
    """Coloured rectangles moving over a noisy grey background."""
    g = torch.Generator().manual_seed(seed)
    clips = []
    for _ in range(batch):
        bg = 0.5 + 0.05 * torch.randn(3, size, size, generator=g)
        shapes = [(torch.rand(3, generator=g), *torch.randint(15, 50, (2,), generator=g).tolist(),
                   *torch.randint(10, size - 70, (2,), generator=g).tolist(),
                   *torch.randint(-4, 5, (2,), generator=g).tolist()) for _ in range(3)]
        frames = []
        for t in range(t_max):
            f = bg.clone()
            for c, w, h, x0, y0, vx, vy in shapes:
                xs, ys = x0 + vx * t, y0 + vy * t
                f[:, ys:ys + h, xs:xs + w] = c.view(3, 1, 1)
            frames.append(f.clamp(0, 1))
        clips.append(_clip(frames))
    return torch.cat(clips)


def test_soft_histogram_is_bitwise_the_all_bins_triangle_binning():
    """Two bins per pixel, as computed, give every bit of the all-bins formula: each pixel's
    circular distance to every centre, 1 - d clamped at 0 (also at the period's ends)."""
    import math

    g = torch.Generator().manual_seed(0)
    for bins, period in ((9, math.pi), (8, 2 * math.pi)):
        angle = torch.rand(3, 17, 23, generator=g) * period
        angle[0, 0, :6] = torch.tensor([0.0, period, period - 1e-7, 1e-9, period / bins,
                                        period / bins * 3])
        weight = torch.rand(3, 17, 23, generator=g)
        pos = (angle * (bins / period)).unsqueeze(1)
        d = (pos - torch.arange(bins, dtype=angle.dtype).view(1, bins, 1, 1)).remainder(bins)
        want = weight.unsqueeze(1) * (1 - torch.minimum(d, bins - d)).clamp(min=0)
        got = baseline_backbone.soft_histogram(angle, weight, bins, period)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))
        assert ((got > 0).sum(1) <= 2).all()


def test_hoghof_is_registered_as_non_learned():
    net, bb, identity = build_backbone("hoghof", random_init=True, seed=3)   # ignored
    assert identity == "non-learned" and not net.training and bb.weights is None
    assert bb.norm is not None and bb.weights_enum is None and bb.sees_image
    assert (bb.channels, feature_stride(bb)) == (net.channels, net.stride)
    assert list(net.parameters()) == [] and isinstance(net, baseline_backbone.HogHof)
    with pytest.raises(ArtifactError, match="x: hoghof is non-learned and takes no weights"):
        build_backbone("hoghof", weights="x")
    with pytest.raises(ArtifactError, match="ResNet-style"):
        build_backbone("hoghof", dilate_last=True)


@pytest.mark.parametrize("t,h,w", [(8, 160, 160), (2, 40, 100), (1, 20, 20), (4, 32, 64)])
def test_hoghof_shape_and_determinism(t, h, w):
    net, bb, _ = build_backbone("hoghof")
    x = torch.rand(2, 3, t, h, w) * 2 - 1
    y = net(x)
    assert y.shape == (2, bb.channels, 1, h // 20, w // 20) and torch.isfinite(y).all()
    assert torch.equal(y, net(x.clone()))
    torch.testing.assert_close(y[1:], net(x[1:]))     # each clip on its own


def test_hoghof_sees_motion_and_its_direction():
    net = baseline_backbone.HogHof()
    hof = slice(10, 18)                              # the 8 direction bins
    energy = [19, 20]                                # speed, temporal difference
    static, right, left = (net(_square(dx))[0, :, 0] for dx in (0, 3, -3))
    cell = (1, 1)                                    # the square's middle cell (of 4 x 4)
    for c in energy:
        assert right[c].sum() > 0.1 and static[c].sum() == 0
        assert left[c].sum() > 0.1
    assert static[hof].abs().max() == 0
    r, lft = right[hof][:, cell[0], cell[1]], left[hof][:, cell[0], cell[1]]
    assert r.argmax() == 0 and lft.argmax() == 4     # bin 0: +x (right), bin 4: -x (left)
    assert (r - lft).abs().max() > 0.5
    # mirrored motion: the histograms summed over the map are each other's mirror image
    torch.testing.assert_close(right[hof].sum((1, 2))[[0, 4]], left[hof].sum((1, 2))[[4, 0]],
                               rtol=1e-4, atol=1e-4)


def test_hoghof_colour_channels_see_a_red_patch():
    net = baseline_backbone.HogHof()
    grey = _square(0, colour=(0.6, 0.6, 0.6))
    red = _square(0, colour=(1.0, 0.0, 0.0))
    yg, yr = net(grey)[0, :, 0], net(red)[0, :, 0]
    mean_rgb = slice(21, 24)
    cell_in, cell_out = (1, 1), (3, 3)          # the square covers cell (1, 1); (3, 3) is bare
    r, g, _ = yr[mean_rgb, cell_in[0], cell_in[1]]
    assert r > 0 and g < 0 and r - g > 2
    assert (yg[mean_rgb, cell_in[0], cell_in[1]] - yr[mean_rgb, cell_in[0], cell_in[1]]
            ).abs().max() > 1
    torch.testing.assert_close(yg[mean_rgb, cell_out[0], cell_out[1]],
                               yr[mean_rgb, cell_out[0], cell_out[1]])


def test_hoghof_output_is_of_order_one():
    y = baseline_backbone.HogHof()(_moving_shapes())
    assert 0.2 <= float(y.std()) <= 5 and float(y.abs().max()) < 20
    assert (y.std(dim=(0, 2, 3, 4)) > 0).all()              # every channel varies


def test_hoghof_told_the_image_size_ignores_the_padding():
    net = baseline_backbone.HogHof()
    x = _moving_shapes(batch=2)[..., :70, :110]        # partial cells at the bottom and right
    rows, cols = 4, 6                                  # ceil(70 / 20), ceil(110 / 20)
    a, b = (net(F.pad(x, (0, side - 110, 0, side - 70)), image=(70, 110)) for side in (120, 200))
    torch.testing.assert_close(a[..., :rows, :cols], b[..., :rows, :cols])
    assert b[..., rows:, :].abs().max() == 0 and b[..., cols:].abs().max() == 0
    # an image of whole cells: as if it were given unpadded (edges replicated, not zeros)
    y = x[..., :60, :100]
    inside = net(F.pad(y, (0, 60, 0, 100)), image=(60, 100))[..., :3, :5]
    torch.testing.assert_close(inside, net(y), rtol=1e-5, atol=1e-5)
    assert torch.equal(net(y, image=(60, 100)), net(y))     # no padding: the plain path


def test_the_package_keeps_the_public_names_and_one_module_per_family():
    import pipeline.backbones as pkg

    for name in ("BACKBONES", "NON_LEARNED", "Backbone", "build_backbone", "feature_stride",
                 "get_backbone", "dilate_last_stage", "build_classifier"):
        assert hasattr(pkg, name), name
    assert {b.family for b in BACKBONES.values()} == {"torchvision", "i3d", "hoghof",
                                                       "slowfast", "flow"}
    for family in ("torchvision", "i3d", "hoghof", "slowfast", "flow"):
        assert (Path(pkg.__file__).parent / f"{family}.py").is_file()
    assert BACKBONES["hoghof"].classifier is None
    with pytest.raises(ArtifactError, match="hoghof: has no classifier"):
        pkg.build_classifier("hoghof")


def test_a_torchvision_classifier_gives_kinetics_logits_with_its_labels():
    clf = backbones_pkg.build_classifier("r3d_18", random_init=True, seed=0)
    assert len(clf.labels) == 400 and clf.labels[6] == "arm wrestling"
    assert clf.preset.crop == 112 and clf.identity == "random-init(seed=0)"
    with torch.inference_mode():
        assert clf.net(torch.randn(1, 3, 4, 32, 32)).shape == (1, 400)
