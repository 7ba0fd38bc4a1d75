"""``atr``: the box mask (the context part reads only cells outside the actor's box), the
padding mask, and the attention against a plain per-actor loop.  The shared contracts
(permutation, padding slots, keyframes independent, cropped maps) run in test_heads.py and
test_masking.py."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import build_head
from pipeline.models.atr import box_offsets, outside_boxes
from tests.models.batches import C, H, K, W, make_batch

torch.set_num_threads(1)


def make_atr(seed: int = 0, **hp) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_head("atr", C, K, **{"hidden_dim": 8, **hp}).eval()


def test_outside_boxes_marks_every_cell_the_box_touches():
    rois = torch.tensor([[0, 1.5, 2.0, 3.0, 4.5],      # cols 1..2, rows 2..4
                         [0, 0.0, 0.0, 8.0, 8.0]])     # the whole map
    out = outside_boxes(rois, 6, 5)                    # (2, 6, 5)
    inside = torch.zeros(6, 5, dtype=torch.bool)
    inside[2:5, 1:3] = True
    assert torch.equal(out[0], ~inside)
    assert not out[1].any()


def test_a_change_inside_the_box_does_not_move_the_context_part():
    """With the actor's query fixed, the context part reads no cell its box touches (the
    query itself comes from the box: the actor part)."""
    head = make_atr()
    context, rois = make_batch((3,), seed=2)
    q = torch.randn(len(rois), 8)
    changed = context.clone()
    inside = ~outside_boxes(rois[:1], H, W)[0]         # the cells actor 0's box touches
    changed[0][:, inside] += 50 * torch.randn(C, int(inside.sum()))
    with torch.no_grad():
        y0 = head.context_part(q, context, rois)
        torch.testing.assert_close(head.context_part(q, changed, rois)[0], y0[0],
                                   atol=0, rtol=0)                   # bitwise
        assert not torch.allclose(head.attend(changed, rois)[0][0],  # the actor part does
                                  head.attend(context, rois)[0][0])
        # ... and a change outside the box moves the context part
        outside = context.clone()
        outside[0][:, ~inside] += 5.0 * torch.randn(C, int((~inside).sum()))
        assert not torch.allclose(head.context_part(q, outside, rois)[0], y0[0], atol=1e-4)


def test_padding_cells_are_never_keys():
    head = make_atr()
    context, rois = make_batch((2,), seed=4)
    rois[:, 1:] = rois[:, 1:].clamp(max=5.0)           # boxes inside a 6x6 image
    valid = torch.tensor([[6, 6]])
    garbage = context.clone()
    garbage[..., 6:, :] = 1e4
    garbage[..., :, 6:] = -1e4
    with torch.no_grad():
        torch.testing.assert_close(head(garbage, rois, valid=valid),
                                   head(context, rois, valid=valid), atol=1e-5, rtol=1e-5)


def test_attention_matches_a_loop_over_actors():
    head = make_atr()
    context, rois = make_batch((1, 2, 3), seed=5)
    with torch.no_grad():
        a, y = head.attend(context, rois)
        for i, roi in enumerate(rois):
            b = int(roi[0])
            keep = outside_boxes(roi[None], H, W)[0].flatten()          # (HW,)
            q = head.query(a[i])                                        # (d,)
            k = head.key(context[b:b + 1])[0].flatten(1)[:, keep]       # (d, P)
            v = head.value(context[b:b + 1])[0].flatten(1)[:, keep]     # (d, P)
            w = torch.softmax(q @ k / 8 ** 0.5, 0)
            torch.testing.assert_close(y[i], v @ w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", [False, True])
def test_each_attention_head_is_a_softmax_of_its_own_slice_over_the_cells_outside(pos):
    """num_heads = h: head j reads channels [j d/h, (j+1) d/h) of q, k, v (plus its own row
    of the offset bias) and weighs the cells outside the box on its own."""
    head = make_atr(num_heads=4, pos=pos)
    context, rois = make_batch((1, 2, 3), seed=7)
    with torch.no_grad():
        for p in (head.pos_bias, head.pos_key, head.pos_value) if pos else ():
            p.normal_()                                 # rows that differ from head to head
        a, y = head.attend(context, rois)
        for i, roi in enumerate(rois):
            b = int(roi[0])
            keep = outside_boxes(roi[None], H, W)[0].flatten()          # (HW,)
            q = head.query(a[i])                                        # (d,)
            k = head.key(context[b:b + 1])[0].flatten(1)                # (d, HW)
            v = head.value(context[b:b + 1])[0].flatten(1)              # (d, HW)
            if pos:
                o = box_offsets(roi[None], H, W, head.config.reach)[0]  # (HW,)
                k, v = k + head.pos_key[o].T, v + head.pos_value[o].T
            for j in range(4):
                s = slice(2 * j, 2 * j + 2)                             # d / h = 2
                scores = q[s] @ k[s] / 2 ** 0.5                         # (HW,)
                if pos:
                    scores = scores + head.pos_bias[j, o]
                w = torch.softmax(scores[keep], 0)
                torch.testing.assert_close(y[i, s], v[s][:, keep] @ w, atol=1e-5, rtol=1e-5)
    assert head.pos_bias is None or head.pos_bias.shape == (4, 49)


def test_num_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="num_heads"):
        make_atr(num_heads=3)


def test_box_offsets_count_whole_cells_from_the_box_centre():
    rois = torch.tensor([[0, 2.0, 1.0, 3.0, 4.0],      # centre (2.5, 2.5): cell (2, 2)
                         [0, 0.0, 0.0, 1.0, 1.0]])     # centre (0.5, 0.5): cell (0, 0)
    o = box_offsets(rois, 6, 5, reach=2).view(2, 6, 5)  # index (dy + 2) * 5 + (dx + 2)
    centre = 2 * 5 + 2
    assert o[0, 2, 2] == centre and o[1, 0, 0] == centre
    assert o[0, 2, 3] == centre + 1 and o[0, 2, 1] == centre - 1     # right, left of the box
    assert o[0, 1, 2] == centre - 5 and o[0, 5, 2] == 4 * 5 + 2      # above; clipped below
    assert o[1, 5, 4] == 24 and o[0, 0, 0] == 0                      # clipped corners


def test_pos_attends_first_to_the_cells_beside_the_box_and_learns_where():
    """With ``pos`` and the keys' content removed, the weights fall off with the cell's
    distance from the box (the bias's start); the value of a cell says where it lies."""
    head = make_atr(pos=True, reach=3)
    with torch.no_grad():
        head.key.weight.zero_()
        head.key.bias.zero_()
    context, _ = make_batch((1,), seed=6)
    rois = torch.tensor([[0, 3.0, 2.0, 4.0, 4.0]])     # centre cell (row 3, col 3)
    captured = {}
    head.pos_value.register_hook(lambda g: captured.setdefault("g", g))
    q = torch.randn(1, 8)
    y = head.context_part(q, context, rois)
    scores = head.pos_bias[box_offsets(rois, H, W, 3)].view(H, W)
    assert scores[3, 4] == -1 and scores[3, 5] == -2 and scores[1, 1] == -4
    w = torch.softmax(scores.flatten()[outside_boxes(rois, H, W)[0].flatten()], 0)
    assert w.max() > 5 * w.min()
    y.sum().backward()
    assert captured["g"].abs().sum(1).count_nonzero() > 1   # several offsets get gradient
    plain = make_atr(pos=False)
    assert plain.pos_bias is None and plain.pos_key is None
    assert sum(p.numel() for p in head.parameters()) - sum(
        p.numel() for p in plain.parameters()) == 49 * (8 + 8 + 1)


@pytest.mark.parametrize("fuse", ["concat", "add"])
def test_a_box_over_the_whole_map_has_no_context_and_finite_gradients(fuse):
    head = make_atr(fuse=fuse).train()
    context, _ = make_batch((1,))
    rois = torch.tensor([[0, 0.0, 0.0, float(W), float(H)], [0, 1.0, 1.0, 3.0, 3.0]])
    a, y = head.attend(context, rois)
    assert torch.equal(y[0], torch.zeros_like(y[0])) and y[1].abs().sum() > 0
    head(context, rois).square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_fuse_sets_what_the_classifier_reads():
    context, rois = make_batch((2,))
    concat, add = make_atr(), make_atr(fuse="add")
    assert concat.classifier.in_features == C + 8 and add.classifier.in_features == C
    with torch.no_grad():
        assert [p.shape for p in concat.features(context, rois)] == [(2, C), (2, 8)]
        assert [p.shape for p in add.features(context, rois)] == [(2, C)]
