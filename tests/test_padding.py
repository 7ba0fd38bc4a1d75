"""Heads see only the image, end to end: one 16:9 clip extracted with two paddings gives the
same logits for the same boxes, for every head (issue: padded context cells must not count).

extract pads each frame right and bottom to a square canvas (``pad_multiple``); the image's
cells travel with each keyframe's map as ``valid`` (:func:`pipeline.keyframes.batch`), and
every head restricts its pooling, attention and RoI paths to them
(:mod:`pipeline.models.masking`).  The features inside the image agree to float16 storage
precision (hoghof sees only the image), so the logits agree to that precision too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import extract
from pipeline.artifacts.features import FeatureStore
from pipeline.keyframes import FeatureCache, Keyframe, batch
from pipeline.models import HEADS, build_head

SMALL = {"linear": {}, "actor_actor": dict(hidden_dim=16, num_heads=2),
         "acrn": dict(hidden_dim=8), "acar": dict(reduce_dim=16, hidden_dim=8),
         "acfb": dict(reduce_dim=16, hidden_dim=8), "lfb": dict(hidden_dim=8)}
BOXES = np.array([[0.05, 0.1, 0.4, 0.95], [0.55, 0.2, 0.98, 0.99]], np.float32)


@pytest.fixture(scope="module")
def stores(wide_clip, tmp_path_factory) -> dict[int, FeatureStore]:
    """The 16:9 clip (conftest) extracted with hoghof at pad_multiple 20 (a 140x140 canvas:
    7x7 cells, the image 4x7) and 60 (180x180)."""
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
    assert shape_a == (7, 7) and shape_b == (9, 9)          # the maps really differ in size
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
