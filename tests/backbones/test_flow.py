"""The Farneback flow backbone: direction and size of a translated square's flow, its grid
(hoghof's), its padding rule, its registry entry."""

import numpy as np
import pytest
import torch

from pipeline.backbones import BACKBONES, build_backbone
from pipeline.backbones.flow import CHANNELS, SCALE, FarnebackFlow


def moving_square(dx: int, dy: int, T: int = 6, size: int = 80) -> torch.Tensor:
    """(1, 3, T, size, size) in [-1, 1]: a textured 20x20 square on grey, moving
    (dx, dy) px per frame from (30, 30)."""
    tex = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (20, 20))).float()
    x = torch.full((1, 3, T, size, size), -0.2)
    for t in range(T):
        y0, x0 = 30 + dy * t, 30 + dx * t
        x[0, :, t, y0:y0 + 20, x0:x0 + 20] = tex
    return x


@pytest.mark.parametrize("dx, dy, bin_", [(2, 0, 0), (-2, 0, 4), (0, 2, 2), (0, -2, 6)])
def test_the_flow_of_a_translated_square_points_the_way_it_moves(dx, dy, bin_):
    out = FarnebackFlow()(moving_square(dx, dy))           # (1, 12, 1, 4, 4)
    assert out.shape == (1, CHANNELS, 1, 4, 4)
    m = out[0, :, 0]
    # the cell the square crosses most: (1..2, 1..2) hold it; take the fastest cell
    cell = np.unravel_index(int(m[3].argmax()), m.shape[1:])
    fx, fy = float(m[0][cell]) * SCALE, float(m[1][cell]) * SCALE    # px per frame pair
    assert fx == pytest.approx(dx, abs=0.8) and fy == pytest.approx(dy, abs=0.8)
    assert int(m[4:, cell[0], cell[1]].argmax()) == bin_     # the direction histogram's peak
    assert abs(float(m[2][cell])) < 0.1                     # dx * dy: one of them is ~0
    # a diagonal motion: the product's sign follows
    d = FarnebackFlow()(moving_square(2, 2))[0, :, 0]
    c = np.unravel_index(int(d[3].argmax()), d.shape[1:])
    assert float(d[2][c]) > 0.1 and float(d[0][c]) > 0 and float(d[1][c]) > 0


def test_a_still_clip_has_no_flow_and_one_frame_is_not_an_error():
    still = moving_square(0, 0)
    assert float(FarnebackFlow()(still).abs().max()) < 1e-3
    assert float(FarnebackFlow()(still[:, :, :1]).abs().max()) < 1e-3


def test_the_grid_is_hoghofs_and_padding_is_invisible():
    x = moving_square(2, 1)                                 # (1, 3, 6, 80, 80)
    hog, _, _ = build_backbone("hoghof")
    assert FarnebackFlow()(x).shape[-2:] == hog(x).shape[-2:]
    assert BACKBONES["flow"].stride == BACKBONES["hoghof"].stride
    padded = torch.zeros(1, 3, 6, 120, 120)
    padded[..., :80, :80] = x
    out = FarnebackFlow()(padded, image=(80, 80))            # (1, 12, 1, 6, 6)
    torch.testing.assert_close(out[..., :4, :4], FarnebackFlow()(x))
    assert float(out[..., 4:, :].abs().max()) == 0 and float(out[..., :, 4:].abs().max()) == 0


def test_registry_entry_is_non_learned():
    net, bb, identity = build_backbone("flow")
    assert identity == "non-learned" and bb.channels == CHANNELS and bb.sees_image
    with pytest.raises(Exception, match="non-learned and takes no weights"):
        build_backbone("flow", weights="x")
