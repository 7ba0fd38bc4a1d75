"""The masking operators (pipeline/models/masking.py), each against the plain operator applied
to every keyframe's map cropped to its valid extents; then the pattern for the heads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from pipeline.models import HEADS, RelationHead, build_head
from pipeline.models import masking as M
from pipeline.models.actor import actor_vectors, group_actors
from pipeline.models.hr2o import MESSAGES, HR2OBlock

torch.set_num_threads(1)

C, H, W, K = 6, 12, 12, 4
# (rows, cols) of three keyframes: a wide image (9 x 12), a tall one, a small one
VALID = torch.tensor([[9, 12], [12, 7], [6, 5]])
DOWNSAMPLES = {
    "none": nn.Identity(),
    "max2x2": nn.MaxPool2d(3, stride=2, padding=1),
    "max4x4": nn.MaxPool2d(5, stride=4, padding=2),
    "global": nn.AdaptiveMaxPool2d(1),
}


def padded_map(valid: torch.Tensor = VALID, channels: int = C, seed: int = 0,
               height: int = H, width: int = W) -> torch.Tensor:
    """(B, channels, H, W) random map whose cells outside ``valid`` hold large garbage."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(valid), channels, height, width, generator=g)
    garbage = 100 * torch.randn(x.shape, generator=g) + 50
    return torch.where(M.valid_mask(valid, height, width)[:, None], x, garbage)


def boxes_inside(valid: torch.Tensor = VALID, per_keyframe: int = 3, seed: int = 0):
    """(N, 5) rois inside each keyframe's image, one per keyframe reaching its bottom-right
    corner exactly (the cells RoIAlign clamps)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, (r, c) in enumerate(valid.tolist()):
        lim = torch.tensor([c, r], dtype=torch.float32)
        xy1 = torch.rand(per_keyframe, 2, generator=g) * lim / 2
        xy2 = xy1 + 0.5 + torch.rand(per_keyframe, 2, generator=g) * (lim - 0.5 - xy1)
        xy2[0] = lim                                              # touches the corner
        rows.append(torch.cat([torch.full((per_keyframe, 1), float(b)), xy1, xy2], 1))
    return torch.cat(rows)


def crop_per_keyframe(context: torch.Tensor, rois: torch.Tensor, valid: torch.Tensor):
    """Each keyframe alone, cropped to its valid extents: a list over b of
    ``(context (1, C, rows, cols), rois (n_b, 5) with b = 0, positions (n_b,) in rois)``."""
    out = []
    for b, (r, c) in enumerate(valid.tolist()):
        pos = (rois[:, 0] == b).nonzero()[:, 0]
        sub = rois[pos].clone()
        sub[:, 0] = 0
        out.append((context[b:b + 1, :, :r, :c], sub, pos))
    return out


def crop_maps(x: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
    """x (L, ..., h, w) -> [x[i:i+1, ..., :rows_i, :cols_i]]."""
    return [x[i:i + 1, ..., :r, :c] for i, (r, c) in enumerate(valid.tolist())]


def inside(y: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
    return crop_maps(y, valid)


def assert_close_lists(got, want, atol=1e-5, rtol=1e-5):
    assert len(got) == len(want)
    for g_, w_ in zip(got, want, strict=True):
        torch.testing.assert_close(g_, w_, atol=atol, rtol=rtol)


# ---- the valid region ----------------------------------------------------------------

def test_valid_mask_and_actor_valid():
    m = M.valid_mask(VALID, H, W)                                   # (B, H, W)
    assert m.shape == (3, H, W) and m.dtype == torch.bool
    for b, (r, c) in enumerate(VALID.tolist()):
        want = torch.zeros(H, W, dtype=torch.bool)
        want[:r, :c] = True
        assert torch.equal(m[b], want)
    rois = boxes_inside()
    assert torch.equal(M.actor_valid(VALID, rois), VALID[[0, 0, 0, 1, 1, 1, 2, 2, 2]])
    assert M.actor_valid(None, rois) is None


def test_cells_inside_a_view():
    assert M.cells_inside((0, 0, 160, 90), 16.0) == (6, 10)       # 90 / 16 = 5.6: 6 rows
    assert M.cells_inside((0, 0, 160, 96), 16.0) == (6, 10)
    assert M.cells_inside((0, 0, 100, 100), 100 / 7) == (7, 7)      # float stride, exact
    with pytest.raises(ValueError, match="top-left"):
        M.cells_inside((8, 0, 160, 96), 16.0)


@pytest.mark.parametrize("bad, msg", [
    (torch.tensor([9, 12]), "shape"),
    (torch.tensor([[9, 12, 1]] * 3), "shape"),
    (torch.tensor([[9, 12], [0, 7], [6, 5]]), "1..12"),
    (torch.tensor([[9, 13], [12, 7], [6, 5]]), "1..12"),
    (torch.tensor([[9.0, 12.0], [12.0, 7.0], [6.0, 5.0]]), "int64"),
])
def test_bad_valid_is_a_one_line_error(bad, msg):
    with pytest.raises(ValueError, match=msg) as err:
        M.zero_outside(padded_map(), bad)
    assert "\n" not in str(err.value)


def test_valid_of_the_wrong_batch_size_is_an_error():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        M.zero_outside(padded_map(), VALID[:2])


@pytest.mark.parametrize("full", [False, True], ids=["None", "covering"])
def test_no_masking_when_valid_covers_the_map(full):
    """valid=None, or a valid covering the whole map: the inputs come back unchanged (the
    same object) or the plain operator's result, bitwise."""
    x = padded_map()
    valid = torch.tensor([[H, W]] * 3) if full else None
    assert M.zero_outside(x, valid) is x
    assert M.fill_outside(x, valid, -math.inf) is x
    assert M.replicate_edges(x, valid) is x
    assert torch.equal(M.masked_spatial_mean(x, valid), x.mean(dim=(2, 3)))
    norm = nn.GroupNorm(1, C)
    assert torch.equal(M.masked_group_norm(x, valid, norm), norm(x))
    for pool in DOWNSAMPLES.values():
        y, ext = M.masked_max_pool(x, valid, pool)
        assert torch.equal(y, pool(x))
        assert ext is None if valid is None else torch.equal(ext, torch.tensor(
            [list(pool(x).shape[-2:])] * 3))
    rois = boxes_inside()                       # acrn's coordinates as they always were
    assert torch.equal(M.box_embedding(rois, valid, H, W),
                       rois[:, 1:] / rois.new_tensor([W, H, W, H]))
    ys, xs = (torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W
    y, x_ = torch.meshgrid(ys, xs, indexing="ij")
    assert torch.equal(M.location_embedding(H, W, x, valid), torch.stack([x_, y])[None])


# ---- RoIAlign ------------------------------------------------------------------------

def roi_align_like_actor(x, rois):
    """RoIAlign as pipeline/models/actor.py calls it."""
    return roi_align(x, rois, output_size=7, spatial_scale=1.0, sampling_ratio=0, aligned=True)


def test_replicate_edges_makes_roi_align_see_the_cropped_map():
    context, rois = padded_map(), boxes_inside()
    got = roi_align_like_actor(M.replicate_edges(context, VALID), rois)   # (N, C, 7, 7)
    for ctx_b, rois_b, pos in crop_per_keyframe(context, rois, VALID):
        torch.testing.assert_close(got[pos], roi_align_like_actor(ctx_b, rois_b),
                                   atol=1e-5, rtol=1e-5)
    # without it, the boxes at the corner read the padding (the test has teeth)
    plain = roi_align_like_actor(context, rois)
    ctx_0, rois_0, pos_0 = crop_per_keyframe(context, rois, VALID)[0]
    assert not torch.allclose(plain[pos_0], roi_align_like_actor(ctx_0, rois_0), atol=1e-3)
    zeroed = roi_align_like_actor(M.zero_outside(context, VALID), rois)
    assert not torch.allclose(zeroed[pos_0], roi_align_like_actor(ctx_0, rois_0), atol=1e-3)


def test_replicate_edges_holds_up_to_half_a_cell_beyond_the_image():
    """aligned=True samples strictly inside [y1 - 0.5, y2 - 0.5]: boxes reaching half a cell
    into the padding still see the cropped map."""
    context = padded_map()
    rois = torch.tensor([[b, 0.3, 0.2, c + 0.5, r + 0.5]
                         for b, (r, c) in enumerate(VALID.tolist())])
    got = roi_align_like_actor(M.replicate_edges(context, VALID), rois)
    for ctx_b, rois_b, pos in crop_per_keyframe(context, rois, VALID):
        torch.testing.assert_close(got[pos], roi_align_like_actor(ctx_b, rois_b),
                                   atol=1e-5, rtol=1e-5)


def test_replicate_edges_values_and_gradient():
    x = padded_map().requires_grad_(True)
    y = M.replicate_edges(x, VALID)
    r, c = VALID[2].tolist()
    assert torch.equal(y[2, :, :r, :c], x[2, :, :r, :c])                # inside unchanged
    assert torch.equal(y[2, :, H - 1, W - 1], x[2, :, r - 1, c - 1])    # corner replicated
    assert torch.equal(y[2, :, 0, W - 1], x[2, :, 0, c - 1])
    y.sum().backward()
    assert (x.grad[~M.valid_mask(VALID, H, W)[:, None].expand_as(x)] == 0).all()


def test_actor_vectors_with_valid_are_the_cropped_ones():
    """What lfb's bank builder computes: ``actor_vectors(context, rois, valid=valid)``."""
    context, rois = padded_map(), boxes_inside()
    got = actor_vectors(context, rois, valid=VALID)
    torch.testing.assert_close(got, actor_vectors(M.replicate_edges(context, VALID), rois),
                               atol=0, rtol=0)
    for ctx_b, rois_b, pos in crop_per_keyframe(context, rois, VALID):
        torch.testing.assert_close(got[pos], actor_vectors(ctx_b, rois_b), atol=1e-5, rtol=1e-5)
    assert torch.equal(actor_vectors(context, rois, valid=None), actor_vectors(context, rois))


# ---- convs -------------------------------------------------------------------------------

def test_zeroed_padding_makes_a_padded_conv_the_cropped_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(C, 5, 3, padding=1)
    x = padded_map()
    y = M.zero_outside(conv(M.zero_outside(x, VALID)), VALID)       # (B, 5, H, W)
    assert_close_lists(inside(y, VALID), [conv(xb) for xb in crop_maps(x, VALID)])
    assert (y[~M.valid_mask(VALID, H, W)[:, None].expand_as(y)] == 0).all()
    # and without zeroing, the border cells differ
    assert not torch.allclose(conv(x)[0:1, :, :9, :], conv(x[0:1, :, :9, :]), atol=1e-3)


def test_conv_without_padding_reads_only_image_rows():
    torch.manual_seed(0)
    conv = nn.Conv2d(C, 5, 3, bias=False)                           # ACAR's conv2
    x = padded_map()
    ext = M.extent_after(VALID, conv)
    assert torch.equal(ext, VALID - 2)
    y = M.zero_outside(conv(x), ext)                                # (B, 5, H-2, W-2)
    assert_close_lists(inside(y, ext), [conv(xb) for xb in crop_maps(x, VALID)])


@pytest.mark.parametrize("n", range(1, 21))
def test_extent_rules(n):
    valid = torch.tensor([[n, n + 3]])
    ext = {k: M.extent_after(valid, p) for k, p in DOWNSAMPLES.items()}
    assert ext["none"].tolist() == [[n, n + 3]]
    assert ext["max2x2"].tolist() == [[math.ceil(n / 2), math.ceil((n + 3) / 2)]]
    assert ext["max4x4"].tolist() == [[math.ceil(n / 4), math.ceil((n + 3) / 4)]]
    assert ext["global"].tolist() == [[1, 1]]
    # = the output size of the module on the cropped map
    for module, smallest in [*((p, 1) for p in DOWNSAMPLES.values()), (nn.Conv2d(1, 1, 3), 3),
                             (nn.Conv2d(1, 1, 3, padding=1), 1), (nn.AvgPool2d(2), 2),
                             (nn.Conv2d(1, 1, (3, 1), stride=2, padding=(1, 0)), 1)]:
        if n < smallest:
            continue
        out = module(torch.zeros(1, 1, n, n + 3)).shape[-2:]
        assert M.extent_after(valid, module).tolist() == [list(out)], module


def test_extent_through_and_unknown_modules():
    mods = [nn.Conv2d(1, 1, 3), DOWNSAMPLES["max2x2"]]
    assert M.extent_through(VALID, mods).tolist() == [[4, 5], [5, 3], [2, 2]]
    assert M.extent_through(None, mods) is None
    with pytest.raises(ValueError, match="ReLU"):
        M.extent_after(VALID, nn.ReLU())
    with pytest.raises(ValueError, match="ceil_mode"):
        M.extent_after(VALID, nn.MaxPool2d(2, ceil_mode=True))


# ---- max-pool, mean, GroupNorm -----------------------------------------------------------

@pytest.mark.parametrize("kind", list(DOWNSAMPLES))
def test_masked_max_pool_of_a_signed_map(kind):
    pool = DOWNSAMPLES[kind]
    x = padded_map() - 60                                           # mostly negative
    y, ext = M.masked_max_pool(x, VALID, pool)
    assert torch.equal(ext, M.extent_after(VALID, pool))
    assert_close_lists(inside(y, ext), [pool(xb) for xb in crop_maps(x, VALID)], atol=0, rtol=0)
    assert torch.isfinite(y).all()
    assert (y[~M.valid_mask(ext, *y.shape[-2:])[:, None].expand_as(y)] == 0).all()


@pytest.mark.parametrize("kind", list(DOWNSAMPLES))
def test_max_pool_of_a_nonnegative_map_with_zeroed_padding_needs_no_minus_inf(kind):
    """Post-ReLU maps with zeroed padding: fill=0 (i.e. just pool, then zero outside) is the
    cropped max-pool, because every window of an output cell inside holds an image cell."""
    pool = DOWNSAMPLES[kind]
    x = M.zero_outside(padded_map().relu(), VALID)
    y, ext = M.masked_max_pool(x, VALID, pool, fill=0.0)
    assert_close_lists(inside(y, ext), [pool(xb) for xb in crop_maps(x, VALID)], atol=0, rtol=0)
    y_plain = M.zero_outside(pool(x), ext)                          # the same, spelled out
    assert torch.equal(y_plain, y)


def test_max_pool_of_a_signed_map_needs_minus_inf():
    pool, x = DOWNSAMPLES["global"], padded_map() - 1000            # all negative
    y, ext = M.masked_max_pool(x, VALID, pool, fill=0.0)
    assert not torch.allclose(y[0:1], pool(x[0:1, :, :9, :12]))


def test_masked_max_pool_gradient_is_finite():
    x = (padded_map() - 60).requires_grad_(True)
    for pool in DOWNSAMPLES.values():
        y, _ = M.masked_max_pool(x, VALID, pool)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        assert torch.isfinite(g).all()
        assert (g[~M.valid_mask(VALID, H, W)[:, None].expand_as(g)] == 0).all()


def test_masked_spatial_mean():
    x = padded_map()
    got = M.masked_spatial_mean(x, VALID)                           # (B, C)
    want = torch.cat([xb.mean(dim=(2, 3)) for xb in crop_maps(x, VALID)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_masked_group_norm_is_group_norm_of_the_cropped_map(groups):
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, C)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = padded_map()
    y = M.masked_group_norm(x, VALID, norm)
    assert_close_lists(inside(y, VALID), [norm(xb) for xb in crop_maps(x, VALID)],
                       atol=1e-5, rtol=1e-4)
    assert (y[~M.valid_mask(VALID, H, W)[:, None].expand_as(y)] == 0).all()


# ---- ACRN's coordinates ----------------------------------------------------------------

def test_acrn_embeddings_use_the_valid_extents():
    context, rois = padded_map(), boxes_inside()
    box = M.box_embedding(rois, VALID, H, W)                        # (N, 4)
    xy = M.location_embedding(H, W, context, VALID)                 # (B, 2, H, W)
    assert xy.shape == (3, 2, H, W)
    for b, (ctx_b, rois_b, pos) in enumerate(crop_per_keyframe(context, rois, VALID)):
        r, c = ctx_b.shape[-2:]
        torch.testing.assert_close(box[pos], M.box_embedding(rois_b, None, r, c))
        torch.testing.assert_close(xy[b, :, :r, :c], M.location_embedding(r, c, ctx_b)[0])
    assert (box <= 1).all() and (box >= 0).all()


# ---- attention across actors, location by location -----------------------------------

def actor_maps_batch(d: int = 4, counts=(2, 3, 1), seed: int = 0):
    """First-order-like maps (N, d, H, W) zeroed outside each actor's keyframe extents,
    rois (N, 5) (only column 0 matters) and the per-actor extents (N, 2)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    rois = torch.cat([b[:, None].float(), torch.zeros(len(b), 4)], 1)
    ext = M.actor_valid(VALID, rois)
    x = torch.randn(len(b), d, H, W, generator=g).relu() + 100 * (~M.valid_mask(ext, H, W))[:, None]
    return M.zero_outside(x, ext), rois, ext


def per_keyframe(x: torch.Tensor, rois: torch.Tensor, ext: torch.Tensor):
    """[(maps of keyframe b cropped (n_b, d, r, c), index, mask, positions)]."""
    out = []
    for b in range(int(rois[:, 0].max()) + 1):
        pos = (rois[:, 0] == b).nonzero()[:, 0]
        r, c = ext[pos[0]].tolist()
        index, mask = group_actors(torch.zeros(len(pos), 5), 1)
        out.append((x[pos, :, :r, :c], index, mask, pos))
    return out


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_hr2o_messages_are_per_cell(kind):
    """Messages read one cell of every actor at a time: on maps zeroed outside, the messages
    at image cells are the cropped ones; only the output needs masking."""
    torch.manual_seed(0)
    msg = MESSAGES[kind](4, 3).eval()
    x, rois, ext = actor_maps_batch()
    index, mask = group_actors(rois, 3)
    y = M.zero_outside(msg(x, index, mask), ext)                    # (N, d, H, W)
    for xb, ib, mb, pos in per_keyframe(x, rois, ext):
        r, c = xb.shape[-2:]
        torch.testing.assert_close(y[pos, :, :r, :c], msg(xb, ib, mb), atol=1e-5, rtol=1e-5)


def plain_block(block: HR2OBlock, x, index, mask, memory=None):
    """An HR2O block as written before masking: x + Dropout(Conv(ReLU(GroupNorm(m))))."""
    m = block.message(x, index, mask) if memory is None else block.message(x, index, mask,
                                                                          memory)
    return x + block.dropout(block.conv(block.norm(m).relu()))


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_a_masked_hr2o_block_is_the_cropped_block(kind):
    torch.manual_seed(0)
    block = HR2OBlock(kind, 4, kernel_size=3).eval()
    nn.init.normal_(block.norm.weight)
    nn.init.normal_(block.norm.bias)
    x, rois, ext = actor_maps_batch()
    index, mask = group_actors(rois, 3)
    with torch.no_grad():
        y = block(x, index, mask, valid=ext)                        # (N, d, H, W)
        for xb, ib, mb, pos in per_keyframe(x, rois, ext):
            r, c = xb.shape[-2:]
            torch.testing.assert_close(y[pos, :, :r, :c], block(xb, ib, mb),
                                       atol=1e-5, rtol=1e-4)
        assert (y[~M.valid_mask(ext, H, W)[:, None].expand_as(y)] == 0).all()
        # valid=None: the block as it was, bitwise
        assert torch.equal(block(x, index, mask), plain_block(block, x, index, mask))


# ---- the pattern for every head in HEADS -------------------------------------------------

ACAR_SMALL = dict(reduce_dim=8, hidden_dim=4)

# id -> (head name, hparams); small sizes, every head and every acar downsample
HEAD_CONFIGS = {
    "linear": ("linear", {}),
    "actor_actor": ("actor_actor", dict(hidden_dim=4, num_heads=2)),
    "acrn": ("acrn", dict(hidden_dim=4)),
    **{f"acar-{k}-{ds}": ("acar", dict(ACAR_SMALL, hr2o=k, downsample=ds))
       for k, ds in [("nl", "max2x2"), ("avg", "max4x4"), ("rn", "global"), ("gattn", "none")]},
    "acfb": ("acfb", dict(ACAR_SMALL, pool="none")),
    "acfb-2x2": ("acfb", dict(ACAR_SMALL, pool="2x2", depth=1)),
    "lfb": ("lfb", dict(hidden_dim=4, zero_init=False)),
    "atr": ("atr", dict(hidden_dim=4)),
    "atr-add": ("atr", dict(hidden_dim=4, fuse="add")),
    "atr-pos": ("atr", dict(hidden_dim=4, pos=True, reach=2)),
}


# (config id, with a bank): every head without a bank, the bank heads with one too
HEAD_CASES = [*((cid, False) for cid in HEAD_CONFIGS),
              *((cid, True) for cid, (name, _) in HEAD_CONFIGS.items() if name in ("acfb", "lfb"))]
CASE_IDS = [f"{cid}{'-bank' if bank else ''}" for cid, bank in HEAD_CASES]


def test_every_head_has_a_masking_case():
    # the heads that read time (B, C, T, H, W): these cases in test_temporal_heads.py
    timed = {name for name, cls in HEADS.items() if cls.temporal}
    assert {name for name, _ in HEAD_CONFIGS.values()} == set(HEADS) - timed
    for name, hp in HEAD_CONFIGS.values():      # and every bank head is run with a bank
        if build_head(name, C, K, **hp).bank_request is not None:
            assert (name, True) in {(HEAD_CONFIGS[c][0], b) for c, b in HEAD_CASES}


def make_bank(head, valid: torch.Tensor, slots: int = 3, seed: int = 1, height: int = H,
              width: int = W):
    """A padded bank for a bank head and a function giving keyframe b's cropped bank.

    acfb: banked first-order maps (B, S, d, h, w), non-negative, 0 outside the keyframe's
    extents after conv2 and the bank pool (what a masked ``bank_maps`` stores); lfb: actor
    vectors (B, S, C'), which do not depend on the crop.  None for the other heads."""
    req = head.bank_request
    if req is None:
        return None, lambda b: None
    g = torch.Generator().manual_seed(seed)
    B = len(valid)
    mask = torch.ones(B, slots, dtype=torch.bool)
    mask[0, -1] = False
    if req.kind == "lfb":
        mem = torch.randn(B, slots, req.dim, generator=g)
        return (mem, mask), lambda b: (mem[b:b + 1], mask[b:b + 1])
    ext = M.extent_through(valid, [head.conv2, head.downsample])    # (B, 2)
    h, w = head.bank_item_shape(height, width, req.pool)[1:]
    mem = M.zero_outside(torch.rand(B, slots, req.dim, h, w, generator=g), ext)
    crops = ext.tolist()
    return (mem, mask), lambda b: (mem[b:b + 1, ..., :crops[b][0], :crops[b][1]],
                                   mask[b:b + 1])


# ---- valid=None: the heads as written before masking, from their own modules -------------

def plain_actors(head, x, rois):
    return actor_vectors(x, rois, head.config.roi_size)             # (N, C)


def plain_linear(head, context, rois, bank=None):
    return head.fc(head.dropout(plain_actors(head, context, rois)))


def plain_acrn(head, context, rois, bank=None):
    _, _, h, w = context.shape
    b = rois[:, 0].long()
    a = plain_actors(head, context, rois)
    box = rois[:, 1:] / rois.new_tensor([w, h, w, h])
    y, x = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w,
                          indexing="ij")
    r = (head.rel_context(context)[b] + head.rel_actor(torch.cat([a, box], 1))[:, :, None, None]
         + head.rel_xy(torch.stack([x, y])[None]))
    r = r.relu()
    for conv in head.convs:
        r = conv(r).relu()
    return head.fc(head.dropout(torch.cat([a, r.mean(dim=(2, 3))], 1)))


def plain_acar(head, context, rois, bank=None):
    """acar, and acfb (whose blocks always read the bank slots, maybe none)."""
    b = rois[:, 0].long()
    v = head.reduce(context)
    a = plain_actors(head, v, rois)
    f = head.conv1_context(v)[b] + head.conv1_actor(a)[:, :, None, None]
    f = head.downsample(head.conv2(f.relu()).relu())
    index, mask = group_actors(rois, len(context))
    memory = head.slots(bank, f, len(context)) if head.bank_request is not None else None
    for block in head.hr2o.blocks:
        f = plain_block(block, f, index, mask, memory)
    return head.fc2(head.dropout(torch.cat([head.fc1(a).relu(), f.mean(dim=(2, 3))], 1)))


# actor_actor and lfb: their relation parts are unchanged by masking (only ``actors`` reads
# ``valid``, and ``actor_vectors(..., valid=None)`` is checked bitwise above)
PLAIN = {"linear": plain_linear, "acrn": plain_acrn, "acar": plain_acar, "acfb": plain_acar}


@pytest.mark.parametrize("cid, with_bank", HEAD_CASES, ids=CASE_IDS)
def test_valid_none_or_covering_changes_nothing(cid, with_bank):
    """valid=None and a valid covering the whole map give the head's logits bitwise, and,
    for the heads written out above, the logits of the head as written before masking."""
    name, hp = HEAD_CONFIGS[cid]
    torch.manual_seed(0)
    head = build_head(name, C, K, **hp).eval()
    full = torch.tensor([[H, W]] * 3)
    context, rois = padded_map(full), boxes_inside(full)
    bank = make_bank(head, full)[0] if with_bank else None
    with torch.no_grad():
        out = head(context, rois, bank=bank)
        assert torch.equal(head(context, rois, bank=bank, valid=None), out)
        assert torch.equal(head(context, rois, bank=bank, valid=full), out)
        if name in PLAIN:
            assert torch.equal(PLAIN[name](head, context, rois, bank), out)


@pytest.mark.parametrize("cid, with_bank", HEAD_CASES, ids=CASE_IDS)
def test_head_with_valid_equals_the_head_on_each_cropped_keyframe(cid, with_bank):
    """head(padded, rois, valid) = head on each keyframe alone, cropped to [:rows, :cols]
    (the padding holds large garbage, boxes reach the image's bottom-right corner)."""
    name, hp = HEAD_CONFIGS[cid]
    torch.manual_seed(0)
    head = build_head(name, C, K, **hp).eval()
    context, rois = padded_map(), boxes_inside()
    bank, bank_of = make_bank(head, VALID) if with_bank else (None, lambda b: None)
    with torch.no_grad():
        out = head(context, rois, bank=bank, valid=VALID)
        for b, (ctx_b, rois_b, pos) in enumerate(crop_per_keyframe(context, rois, VALID)):
            torch.testing.assert_close(out[pos], head(ctx_b, rois_b, bank=bank_of(b)),
                                       atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cid, with_bank", HEAD_CASES, ids=CASE_IDS)
def test_two_paddings_give_the_same_logits(cid, with_bank):
    """Issue 15's check: the same images on a 12x12 and a 16x16 canvas (different garbage in
    the padding), the same boxes: the same logits."""
    name, hp = HEAD_CONFIGS[cid]
    torch.manual_seed(0)
    head = build_head(name, C, K, **hp).eval()
    big = padded_map(VALID, height=16, width=16, seed=5)            # (B, C, 16, 16)
    small = torch.where(M.valid_mask(VALID, H, W)[:, None], big[..., :H, :W],
                        -7 * padded_map(VALID, seed=6))             # (B, C, 12, 12)
    rois = boxes_inside()
    bank_big = bank_small = None
    if with_bank:
        bank_big = make_bank(head, VALID, height=16, width=16)[0]
        if head.bank_request.kind == "acfb":
            h, w = head.bank_item_shape(H, W, head.bank_request.pool)[1:]
            bank_small = (bank_big[0][..., :h, :w], bank_big[1])    # 0 beyond the extents
        else:
            bank_small = bank_big
    with torch.no_grad():
        torch.testing.assert_close(head(small, rois, bank=bank_small, valid=VALID),
                                   head(big, rois, bank=bank_big, valid=VALID),
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cid, with_bank", HEAD_CASES, ids=CASE_IDS)
def test_padding_cells_get_no_gradient(cid, with_bank):
    """Training with valid: the padding cells of the context get exactly zero gradient."""
    name, hp = HEAD_CONFIGS[cid]
    torch.manual_seed(0)
    head = build_head(name, C, K, **hp).train()
    context = padded_map().requires_grad_(True)
    bank = make_bank(head, VALID)[0] if with_bank else None
    head(context, boxes_inside(), bank=bank, valid=VALID).square().sum().backward()
    outside = ~M.valid_mask(VALID, H, W)[:, None].expand_as(context)
    assert (context.grad[outside] == 0).all() and context.grad[~outside].abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


# ---- what the demo and the acfb bank builder read --------------------------------------

RELATION_CASES = [(cid, bank) for cid, bank in HEAD_CASES
                  if isinstance(build_head(HEAD_CONFIGS[cid][0], C, K, **HEAD_CONFIGS[cid][1]),
                                RelationHead)]


def test_the_relation_heads_have_cases():
    assert {HEAD_CONFIGS[cid][0] for cid, _ in RELATION_CASES} == {"acrn", "acar", "acfb"}


@pytest.mark.parametrize("cid, with_bank", RELATION_CASES,
                         ids=[f"{c}{'-bank' if b else ''}" for c, b in RELATION_CASES])
def test_relation_maps_are_the_cropped_maps_and_zero_outside_the_image(cid, with_bank):
    """The demo's heatmaps: inside the image, each keyframe's cropped relation maps; 0
    outside (the extents after the head's convs and pools)."""
    name, hp = HEAD_CONFIGS[cid]
    torch.manual_seed(0)
    head = build_head(name, C, K, **hp).eval()
    context, rois = padded_map(), boxes_inside()
    bank, bank_of = make_bank(head, VALID) if with_bank else (None, lambda b: None)
    with torch.no_grad():
        a, maps = head.relation_maps(context, rois, bank, VALID)    # (N, c), (N, d, h, w)
        for b, (ctx_b, rois_b, pos) in enumerate(crop_per_keyframe(context, rois, VALID)):
            a_b, maps_b = head.relation_maps(ctx_b, rois_b, bank_of(b))
            torch.testing.assert_close(a[pos], a_b, atol=1e-5, rtol=1e-4)
            r, c = maps_b.shape[-2:]
            torch.testing.assert_close(maps[pos, :, :r, :c], maps_b, atol=1e-5, rtol=1e-4)
            assert (maps[pos, :, r:] == 0).all() and (maps[pos, :, :, c:] == 0).all()
            assert maps_b.abs().sum() > 0


@pytest.mark.parametrize("pool", ["none", "2x2", "4x4"])
def test_bank_maps_and_first_order_are_the_cropped_ones_and_zero_outside(pool):
    torch.manual_seed(0)
    head = build_head("acar", C, K, **ACAR_SMALL).eval()
    context, rois = padded_map(), boxes_inside()
    with torch.no_grad():
        banked = head.bank_maps(context, rois, pool, VALID)         # (N, d, h, w)
        first = head.first_order(context, rois, VALID)[1]           # (N, d, H-2, W-2)
        assert banked.shape[1:] == head.bank_item_shape(H, W, pool)
        for ctx_b, rois_b, pos in crop_per_keyframe(context, rois, VALID):
            for got, want in [(banked, head.bank_maps(ctx_b, rois_b, pool)),
                              (first, head.first_order(ctx_b, rois_b)[1])]:
                r, c = want.shape[-2:]
                torch.testing.assert_close(got[pos, :, :r, :c], want, atol=1e-5, rtol=1e-4)
                assert (got[pos, :, r:] == 0).all() and (got[pos, :, :, c:] == 0).all()
        full = torch.tensor([[H, W]] * 3)                           # nothing to mask: bitwise
        assert torch.equal(head.bank_maps(context, rois, pool, full),
                           head.bank_maps(context, rois, pool))


@pytest.mark.parametrize("name", ["acar", "acfb"])
def test_acar_needs_three_by_three_image_cells(name):
    head = build_head(name, C, K, **ACAR_SMALL).eval()
    small = torch.tensor([[9, 12], [2, 7], [6, 5]])
    with pytest.raises(ValueError, match="3x3") as err, torch.no_grad():
        head(padded_map(small), boxes_inside(VALID), valid=small)
    assert "\n" not in str(err.value)


def test_a_bad_valid_is_a_one_line_error_from_every_head():  # time: test_temporal_heads
    for name, hp in HEAD_CONFIGS.values():
        head = build_head(name, C, K, **hp).eval()
        with pytest.raises(ValueError, match="valid") as err, torch.no_grad():
            head(padded_map(), boxes_inside(), valid=VALID[:2])
        assert "\n" not in str(err.value), name
