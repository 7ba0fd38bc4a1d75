"""Videos of different sizes in one batch (real video: 4:3, 16:9 and 1080p clips in one store).

Each video's maps have their own size (extract pads each frame to its own square canvas);
a batch mixing them is zero-padded to the largest map, and ``valid`` masks the padding.
Found by bench/e2e_shared.py: training on the four shared clips stopped in ``np.stack``.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.artifacts.features import ViewSpec
from pipeline.keyframes import Keyframe, collate_train, stack_float32
from pipeline.models import build_head


def view(w: int, h: int, side: int) -> ViewSpec:
    return ViewSpec("s32", 32, False, (side, side), (0, 0, w, h), 16)


def test_maps_of_other_sizes_are_padded_right_and_bottom():
    a = np.ones((3, 2, 3), np.float16)
    b = np.full((3, 3, 3), 2, np.float16)
    out = stack_float32([a, b])
    assert out.shape == (2, 3, 3, 3)
    assert torch.equal(out[0, :, :2, :], torch.ones(3, 2, 3))
    assert torch.equal(out[0, :, 2:, :], torch.zeros(3, 1, 3))
    assert torch.equal(out[1], torch.full((3, 3, 3), 2.0))
    same = stack_float32([a, a])                 # one size: stacked as it was
    assert same.shape == (2, 3, 2, 3)


def test_a_batch_of_two_video_sizes_trains_and_masks_the_padding():
    rng = np.random.default_rng(0)
    small = rng.standard_normal((4, 4, 4)).astype(np.float16)  # 64x48 image, 64-px canvas
    large = rng.standard_normal((4, 5, 5)).astype(np.float16)  # 80x48 image, 80-px canvas
    boxes = np.array([[0.1, 0.1, 0.6, 0.9]], np.float32)
    label = np.array([[1.0, 0.0]], np.float32)
    items = [(Keyframe("a", 1, 0, boxes, label), small, view(64, 48, 64), boxes),
             (Keyframe("b", 1, 0, boxes, label), large, view(80, 48, 80), boxes)]
    kfs, context, rois, valid, targets = collate_train(items)
    assert context.shape == (2, 4, 5, 5)
    assert valid.tolist() == [[3, 4], [3, 5]]               # the padded cells are masked
    head = build_head("acar", 4, 2, reduce_dim=4, hidden_dim=4).eval()
    with torch.no_grad():
        out = head(context, rois, valid=valid)
        alone = head(context[:1, :, :4, :4], rois[:1], valid=valid[:1])
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], alone, rtol=1e-4, atol=1e-5)   # padding changes nothing
