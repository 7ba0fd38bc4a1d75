"""The canvas, and heads that see only the image.

extract pads each frame right and bottom to its *canvas*: each side rounded up on its own to
a multiple of ``pad_multiple`` (by default the backbone's stride), so a 16:9 clip keeps its
aspect ratio and a learned backbone sees less than one cell of padding, as close as a padded
input gets to the official code's unpadded clip (``bench/canvas.py`` measures the rest).
The image's cells travel with each keyframe's map as ``valid`` (:func:`pipeline.keyframes.batch`),
and every head restricts its pooling, attention and RoI paths to them
(:mod:`pipeline.models.masking`).  One 16:9 clip extracted with two paddings gives the same
logits for the same boxes, for every head: the features inside the image agree to float16
storage precision (hoghof sees only the image), so the logits agree to that precision too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import extract
from pipeline.artifacts.features import CANVAS, FeatureStore
from pipeline.backbones import build_backbone
from pipeline.inference import spec_differences
from pipeline.keyframes import FeatureCache, Keyframe, batch
from pipeline.models import HEADS, build_head
from pipeline.video import Video

SMALL = {"linear": {}, "actor_actor": dict(hidden_dim=16, num_heads=2),
         "acrn": dict(hidden_dim=8), "acar": dict(reduce_dim=16, hidden_dim=8),
         "acfb": dict(reduce_dim=16, hidden_dim=8), "lfb": dict(hidden_dim=8),
         "atr": dict(hidden_dim=8)}
BOXES = np.array([[0.05, 0.1, 0.4, 0.95], [0.55, 0.2, 0.98, 0.99]], np.float32)


@pytest.fixture(scope="module")
def stores(wide_clip, tmp_path_factory) -> dict[int, FeatureStore]:
    """The 16:9 clip (conftest: 128x72 at short side 72) extracted with hoghof at
    pad_multiple 20 (a 140x80 canvas: 4x7 cells, all of them the image's) and 60 (180x120:
    6x9 cells, the image's 4x7)."""
    videos, dets = wide_clip
    root = tmp_path_factory.mktemp("pad")
    out = {}
    for pad in (20, 60):
        url = str(root / f"p{pad}.zarr")
        cfg = extract.ExtractConfig(backbone="hoghof", short_side=72, flip=True,
                                    pad_multiple=pad, batch_size=2, num_workers=0)
        assert extract.run(cfg, videos, dets, url) == []
        out[pad] = FeatureStore(url)
    return out


def logits(store: FeatureStore, view: str, head: torch.nn.Module) -> tuple[torch.Tensor, tuple]:
    kfs = [Keyframe("wide", t, k, BOXES) for k, t in enumerate(store.timestamps("wide"))]
    context, rois, valid = batch(kfs, FeatureCache(store, view))
    with torch.no_grad():
        return head(context, rois, valid=valid), tuple(context.shape[-2:])


@pytest.mark.parametrize("name", sorted(n for n in HEADS if not HEADS[n].temporal))  # time:
@pytest.mark.parametrize("view", ["s72", "s72_flip"])        # tests/models/test_temporal_heads
def test_two_paddings_give_the_same_logits(stores, name, view):
    torch.manual_seed(0)
    head = build_head(name, 30, 5, **SMALL[name]).eval()
    a, shape_a = logits(stores[20], view, head)
    b, shape_b = logits(stores[60], view, head)
    assert shape_a == (4, 7) and shape_b == (6, 9)          # the maps really differ in size
    assert a.abs().max() > 1e-3                             # not a trivially zero output
    torch.testing.assert_close(a, b, rtol=1e-2, atol=2e-3)


def test_without_the_mask_the_padding_would_change_the_logits(stores):
    """The test above can fail: ignoring ``valid`` (the old heads) moves acar's logits."""
    torch.manual_seed(0)
    head = build_head("acar", 30, 5, **SMALL["acar"]).eval()
    outs = []
    for pad in (20, 60):
        store = stores[pad]
        kfs = [Keyframe("wide", t, k, BOXES) for k, t in enumerate(store.timestamps("wide"))]
        context, rois, _ = batch(kfs, FeatureCache(store, "s72"))
        with torch.no_grad():
            outs.append(head(context, rois))
    assert (outs[0] - outs[1]).abs().max() > 1e-2


# ---- the canvas: a learned backbone runs on the clip padded to its stride, not to a square ---

LEARNED = dict(backbone="mc3_18", random_init=True, clip_frames=4, clip_stride=1, clip_fps=None,
               batch_size=2, num_workers=0)


def _clip(videos, store: FeatureStore, k: int, frames: int = 4) -> np.ndarray:
    video = Video(videos / "wide.mp4")
    t = float(store.timestamps("wide")[k])
    return video.read(extract.clip_indices(t, video.info, frames, 1))   # (T, H0, W0, 3)


def _unpadded_map(videos, store: FeatureStore, size: tuple[int, int]) -> np.ndarray:
    """mc3_18 (the stores' random init) on keyframe 1's clip resized to ``size`` (W, H), no
    F.pad at all: the official input.  -> (C, H', W')"""
    net, bb, _ = build_backbone("mc3_18", random_init=True)
    clip = torch.from_numpy(_clip(videos, store, 1)).permute(0, 3, 1, 2)       # (T, 3, H0, W0)
    x = extract.resize_frames(clip, size).float().div(255)
    x = (x - torch.tensor(bb.mean).view(1, 3, 1, 1)) / torch.tensor(bb.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return net(x.permute(1, 0, 2, 3)[None]).mean(dim=2)[0].numpy()


def test_a_learned_backbone_sees_the_clip_padded_to_its_stride(wide_clip, tmp_path):
    """128x72 at short side 36: the image is 64x36, the canvas 64x48 (stride 16), the map
    3x4 (every cell holds image), and the stored map is the backbone on that clip; the
    square 64x64 canvas of old would give another map (its bottom rows see the padding)."""
    videos, dets = wide_clip
    url = str(tmp_path / "f.zarr")
    assert extract.run(extract.ExtractConfig(**LEARNED, short_side=36), videos, dets, url) == []
    store = FeatureStore(url)
    view = store.view("wide", "s36")
    assert view.input_size == (64, 48) and view.valid == (0, 0, 64, 36)
    assert view.feature_stride == 16
    got = store.read("wide", "s36").astype(np.float32)                   # (K, 512, 3, 4)
    assert got.shape == (2, 512, 3, 4)
    assert store.spec("wide").extra["canvas"] == CANVAS
    net, bb, _ = build_backbone("mc3_18", random_init=True)
    x, canvas, _ = extract.preprocess(_clip(videos, store, 0), 36, False, 16, bb.mean, bb.std)
    assert canvas == (64, 48) and x.shape == (3, 4, 48, 64)
    with torch.inference_mode():
        want = net(x[None]).mean(dim=2)[0].numpy()                       # (512, 3, 4)
        square = torch.nn.functional.pad(x, (0, 0, 0, 16))               # 64x64, as before
        old = net(square[None]).mean(dim=2)[0, :, :3].numpy()            # its image cells
    np.testing.assert_allclose(got[0], want, rtol=1e-2, atol=2e-3)
    assert np.abs(old - want).max() > 10 * np.abs(got[0] - want).max() + 1e-3


def test_a_frame_of_whole_cells_is_not_padded(wide_clip, tmp_path):
    """At short side 144 the 16:9 frame is 256x144, 16x9 cells of 16: the canvas is the frame
    itself, so the stored map is the backbone on the unpadded clip (the official input)."""
    videos, dets = wide_clip
    url = str(tmp_path / "f.zarr")
    cfg = extract.ExtractConfig(**LEARNED, short_side=144)
    assert extract.run(cfg, videos, dets, url) == []
    store = FeatureStore(url)
    assert store.view("wide", "s144").input_size == (256, 144)
    want = _unpadded_map(videos, store, (256, 144))                    # (512, 9, 16)
    got = store.read("wide", "s144")[1].astype(np.float32)
    assert got.shape == want.shape == (512, 9, 16)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=2e-3)


def test_pad_multiple_1_runs_the_backbone_on_the_unpadded_frame(wide_clip, tmp_path):
    """``pad_multiple: 1`` (i3d's and SlowFast's default): no padding at all, whatever the
    frame's size; the map has ceil(size / stride) cells, the last ones standing out past
    the image, as the official code's unpadded input gives."""
    videos, dets = wide_clip
    url = str(tmp_path / "u.zarr")
    cfg = extract.ExtractConfig(**{**LEARNED, "pad_multiple": 1}, short_side=72)
    assert extract.run(cfg, videos, dets, url) == []
    store = FeatureStore(url)
    view = store.view("wide", "s72")
    assert view.input_size == (128, 80) and view.valid == (0, 0, 128, 72)   # 8 x 5 cells
    want = _unpadded_map(videos, store, (128, 72))                      # (512, 5, 8)
    got = store.read("wide", "s72")[1].astype(np.float32)
    assert got.shape == want.shape == (512, 5, 8)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=2e-3)
    padded = str(tmp_path / "p.zarr")                  # the stride canvas differs inside
    assert extract.run(extract.ExtractConfig(**LEARNED, short_side=72), videos, dets,
                       padded) == []
    assert np.abs(FeatureStore(padded).read("wide", "s72")[1].astype(np.float32)
                  - got).max() > 1e-2


def test_a_head_trained_on_a_square_canvas_is_refused_on_these_features():
    """The spec records the canvas: a checkpoint whose features came from a square canvas
    (no ``canvas`` key, LAYOUT < 3) differs from today's store in one named field."""
    cfg = extract.ExtractConfig(**{**LEARNED, "pad_multiple": 16}, short_side=36)
    spec, _ = extract.make_spec(cfg, "random-init(seed=0)")
    old = spec.to_dict()
    del old["extra"]["canvas"]
    assert spec_differences(old, spec) == ["canvas square != per-side"]
    assert spec_differences(spec.to_dict(), spec) == []
