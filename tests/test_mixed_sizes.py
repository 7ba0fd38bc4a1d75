"""Videos of different sizes in one batch (real video: 4:3, 16:9 and 1080p clips in one store).

Each video's maps have their own size and aspect ratio (extract pads each side of a frame to
a multiple of the stride: a 16:9 clip gives a 16:9 map); a batch mixing them is zero-padded
right and bottom to the largest height and the largest width, and ``valid`` masks the padding.
Found by bench/e2e_shared.py: training on the four shared clips stopped in ``np.stack``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline import extract
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureStore, ViewSpec
from pipeline.keyframes import FeatureCache, Keyframe, batch, collate_train, stack_float32
from pipeline.models import build_head
from pipeline.video import write_video


def view(w: int, h: int, side: int | tuple[int, int]) -> ViewSpec:
    canvas = (side, side) if isinstance(side, int) else side
    return ViewSpec("s32", 32, False, canvas, (0, 0, w, h), 16)


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


def test_a_wide_and_a_tall_map_in_one_batch():
    """Non-square canvases: a 16:9 map (4x7 cells, 112x64) beside a 3:4 one (4x3, 48x64):
    the batch is 4x7, the tall map's columns 3.. are masked, each keyframe's logits equal
    its own alone."""
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((4, 4, 7)).astype(np.float16)
    tall = rng.standard_normal((4, 4, 3)).astype(np.float16)
    boxes = np.array([[0.2, 0.1, 0.7, 0.9]], np.float32)
    label = np.array([[0.0, 1.0]], np.float32)
    items = [(Keyframe("w", 1, 0, boxes, label), wide, view(112, 63, (112, 64)), boxes),
             (Keyframe("t", 1, 0, boxes, label), tall, view(48, 64, (48, 64)), boxes)]
    _, context, rois, valid, _ = collate_train(items)
    assert context.shape == (2, 4, 4, 7) and valid.tolist() == [[4, 7], [4, 3]]
    assert torch.equal(context[1, :, :, 3:], torch.zeros(4, 4, 4))
    head = build_head("acar", 4, 2, reduce_dim=4, hidden_dim=4).eval()
    with torch.no_grad():
        out = head(context, rois, valid=valid)
        for i, cols in ((0, 7), (1, 3)):                   # each map cropped to its image
            own = rois[i:i + 1].clone()
            own[:, 0] = 0                                  # its RoI's batch index, alone
            alone = head(context[i:i + 1, :, :, :cols], own)
            torch.testing.assert_close(out[i:i + 1], alone, rtol=1e-4, atol=1e-5)


def test_one_store_of_two_aspect_ratios(tmp_path):
    """extract writes a 16:9 and a 4:3 video into one store, each map of its own canvas;
    a batch of both reads them padded to the larger, with each image's cells valid."""
    rng = np.random.default_rng(2)
    (tmp_path / "v").mkdir()
    for name, (w, h) in {"wide": (128, 72), "old": (96, 72)}.items():
        base = rng.integers(30, 200, (h, w, 3)).astype(np.uint8)
        write_video([base] * 16, tmp_path / "v" / f"{name}.mp4", fps=8, lossless=True)
    dets = tmp_path / "d.parquet"
    write_detections(pd.DataFrame({"video_id": ["wide", "old"], "timestamp": [1, 1],
                                   "x1": 0.1, "y1": 0.1, "x2": 0.6, "y2": 0.9,
                                   "score": 0.9}), dets, {})
    url = str(tmp_path / "f.zarr")
    cfg = extract.ExtractConfig(backbone="hoghof", short_side=72, num_workers=0)
    assert extract.run(cfg, tmp_path / "v", dets, url) == []
    store = FeatureStore(url)
    assert store.view("wide", "s72").input_size == (140, 80)     # 20-px cells: 7 x 4
    assert store.view("old", "s72").input_size == (100, 80)      # 5 x 4
    assert store.read("wide", "s72").shape[-2:] == (4, 7)
    assert store.read("old", "s72").shape[-2:] == (4, 5)
    kfs = [Keyframe(v, 1, 0, np.array([[0.1, 0.1, 0.6, 0.9]], np.float32)) for v in ("wide", "old")]
    context, rois, valid = batch(kfs, FeatureCache(store, "s72"))
    assert context.shape[-2:] == (4, 7) and valid.tolist() == [[4, 7], [4, 5]]
    torch.testing.assert_close(context[1, :, :, :5],
                               torch.from_numpy(store.read("old", "s72")[0]).float())
