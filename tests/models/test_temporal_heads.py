"""The heads that read time (s_only, t_only): what they compute against a plain loop over
keyframes and positions, the masking contract on (B, C, T, H, W) maps (the cases of
test_masking.py, which runs the other heads on (B, C, H, W) maps), and their one-line errors.
The contract tests of test_heads.py (permutation, padding slots, keyframe independence) run
them on maps with time bins too."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from pipeline.models import HEADS, build_head, reads_time
from pipeline.models import masking as M
from pipeline.models.encoder import sinusoid
from tests.models.test_masking import VALID, boxes_inside, crop_per_keyframe

torch.set_num_threads(1)

TEMPORAL_HEADS = {"s_only", "t_only"}
C, T, H, W, K = 6, 4, 12, 12, 4
CASES = {f"{h}-{agg}": (h, dict(width=8, num_heads=2, agg=agg))
         for h in sorted(TEMPORAL_HEADS) for agg in ("avg", "max")}


def padded_maps(valid: torch.Tensor = VALID, seed: int = 0, height: int = H, width: int = W
                ) -> torch.Tensor:
    """(B, C, T, H, W) random maps whose cells outside ``valid`` hold large garbage."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(valid), C, T, height, width, generator=g)
    garbage = 100 * torch.randn(x.shape, generator=g) + 50
    return torch.where(M.valid_mask(valid, height, width)[:, None, None], x, garbage)


def make(cid: str, seed: int = 0) -> torch.nn.Module:
    name, hp = CASES[cid]
    torch.manual_seed(seed)
    return build_head(name, C, K, **hp).eval()


def test_which_heads_read_time():
    assert {n for n in HEADS if reads_time(n)} == TEMPORAL_HEADS
    assert all(reads_time(build_head(n, C, K, width=8, num_heads=2)) for n in TEMPORAL_HEADS)
    assert not reads_time("linear") and not reads_time(build_head("linear", C, K))


def reference(head, context: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """The head written out plainly: per keyframe, per position, RoIAlign of each box on
    each bin, the tokens, the blocks on that keyframe's persons only, mean, classifier."""
    cfg, out = head.config, torch.zeros(len(rois), K)
    agg = (lambda x, d: x.mean(d)) if cfg.agg == "avg" else (lambda x, d: x.amax(d))
    for b in range(len(context)):
        rows = (rois[:, 0] == b).nonzero()[:, 0]
        if len(rows) == 0:
            continue
        boxes = rois[rows].clone()
        boxes[:, 0] = 0
        p = torch.stack([roi_align(context[b:b + 1, :, t], boxes, 7, 1.0, 0, True)
                         for t in range(T)], 2)                     # (n, C, T, 7, 7)
        if cfg.head == "t_only":
            tok = agg(p, (3, 4)).transpose(1, 2)                    # (n, T, C)
            pos = sinusoid(torch.arange(T), cfg.width)
        else:
            tok = agg(p, (2,)).flatten(2).transpose(1, 2)           # (n, 49, C)
            r, c = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
            pos = torch.cat([sinusoid(r.flatten(), cfg.width // 2),
                             sinusoid(c.flatten(), cfg.width - cfg.width // 2)], 1)
        x = head.proj(tok) + pos                                     # (n, P, d)
        for j in range(x.shape[1]):                                  # one position at a time
            s = x[:, j][None]                                        # (1, n, d)
            for block in head.blocks:
                h = block.ln1(s)
                q, k, v = block.attn.qkv(h).view(1, len(rows), 3, cfg.num_heads, -1).unbind(2)
                att = torch.softmax(torch.einsum("bihe,bjhe->bhij", q, k) / q.shape[-1] ** 0.5,
                                    -1)
                y = torch.einsum("bhij,bjhe->bihe", att, v).reshape(1, len(rows), -1)
                s = s + block.attn.out(y)
                s = s + block.mlp(block.ln2(s))
            x[:, j] = head.ln_f(s)[0]
        out[rows] = head.fc(x.mean(1))
    return out


@pytest.mark.parametrize("cid", CASES)
def test_the_head_is_the_plain_loop(cid):
    head = make(cid)
    context = padded_maps(torch.tensor([[H, W]] * 3))
    rois = boxes_inside(torch.tensor([[H, W], [H, W], [H, W]]))
    rois = rois[torch.tensor([0, 4, 5, 1, 8, 2, 3, 6])]               # keyframes of 3, 2, 3
    with torch.no_grad():
        torch.testing.assert_close(head(context, rois), reference(head, context, rois),
                                   atol=1e-5, rtol=1e-4)


def test_t_only_sees_the_order_of_the_bins_and_s_only_does_not():
    """Reversing time changes t_only (position encoding of t); s_only pools time first."""
    context = padded_maps(torch.tensor([[H, W]] * 3))
    rois = boxes_inside(torch.tensor([[H, W]] * 3))
    with torch.no_grad():
        for cid, changes in [("t_only-avg", True), ("s_only-avg", False), ("s_only-max", False)]:
            head = make(cid)
            a, b = head(context, rois), head(context.flip(2), rois)
            assert (not torch.allclose(a, b, atol=1e-4)) == changes, cid
        nopos = build_head("t_only", C, K, width=8, num_heads=2, pos=False).eval()
        torch.testing.assert_close(nopos(context, rois), nopos(context.flip(2), rois))


# ---- the masking contract (test_masking.py's cases, on maps with time bins) ------------

@pytest.mark.parametrize("cid", CASES)
def test_valid_none_or_covering_changes_nothing(cid):
    head = make(cid)
    full = torch.tensor([[H, W]] * 3)
    context, rois = padded_maps(full), boxes_inside(full)
    with torch.no_grad():
        out = head(context, rois)
        assert torch.equal(head(context, rois, valid=None), out)
        assert torch.equal(head(context, rois, valid=full), out)


@pytest.mark.parametrize("cid", CASES)
def test_head_with_valid_equals_the_head_on_each_cropped_keyframe(cid):
    head = make(cid)
    context, rois = padded_maps(), boxes_inside()
    with torch.no_grad():
        out = head(context, rois, valid=VALID)
        for b, (_, rois_b, pos) in enumerate(crop_per_keyframe(context[:, :, 0], rois, VALID)):
            r, c = VALID[b].tolist()
            crop = context[b:b + 1, ..., :r, :c]                     # (1, C, T, r, c)
            torch.testing.assert_close(out[pos], head(crop, rois_b), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cid", CASES)
def test_two_paddings_give_the_same_logits(cid):
    head = make(cid)
    big = padded_maps(VALID, height=16, width=16, seed=5)
    small = torch.where(M.valid_mask(VALID, H, W)[:, None, None], big[..., :H, :W],
                        -7 * padded_maps(VALID, seed=6))
    rois = boxes_inside()
    with torch.no_grad():
        torch.testing.assert_close(head(small, rois, valid=VALID), head(big, rois, valid=VALID),
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cid", CASES)
def test_padding_cells_get_no_gradient(cid):
    head = make(cid).train()
    context = padded_maps().requires_grad_(True)
    head(context, boxes_inside(), valid=VALID).square().sum().backward()
    outside = ~M.valid_mask(VALID, H, W)[:, None, None].expand_as(context)
    assert (context.grad[outside] == 0).all() and context.grad[~outside].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(TEMPORAL_HEADS))
def test_one_line_errors(name):
    head = build_head(name, C, K, width=8, num_heads=2).eval()
    with pytest.raises(ValueError, match="reads maps with time bins") as err, torch.no_grad():
        head(padded_maps()[:, :, 0], boxes_inside())                 # (B, C, H, W)
    assert "\n" not in str(err.value) and "extract.temporal" in str(err.value)
    with pytest.raises(ValueError, match="valid") as err, torch.no_grad():
        head(padded_maps(), boxes_inside(), valid=VALID[:2])
    assert "\n" not in str(err.value)
    for bad, field in [(dict(width=9, num_heads=2), "num_heads"), (dict(agg="sum"), "agg"),
                       (dict(depth=0), "depth"), (dict(pos="yes"), "pos")]:
        with pytest.raises(ValueError, match=field) as err:
            build_head(name, C, K, **bad)
        assert "\n" not in str(err.value) and name in str(err.value)


# ---- t_only with a memory (the memory bank: pooled person features, (B, S, d) slots) ----

def memory_head(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_head("t_only", C, K, width=8, num_heads=2, window=10).eval()


def test_the_memory_request_and_an_empty_memory_is_no_memory():
    head = memory_head()
    req = head.bank_request
    assert (req.kind, req.window, req.max_per_step, req.exclude_current, req.dim) == \
        ("memory", 10, 5, True, 8)
    assert build_head("t_only", C, K, width=8, num_heads=2).bank_request is None
    plain = build_head("t_only", C, K, width=8, num_heads=2).eval()
    plain.load_state_dict({k: v for k, v in head.state_dict().items()
                           if not k.startswith("mem_proj")})
    full = torch.tensor([[H, W]] * 3)
    context, rois = padded_maps(full), boxes_inside(full)
    empty = (torch.zeros(3, 0, 8), torch.zeros(3, 0, dtype=torch.bool))
    masked = (torch.full((3, 2, 8), 1e4), torch.zeros(3, 2, dtype=torch.bool))
    with torch.no_grad():
        out = plain(context, rois)
        assert torch.equal(head(context, rois), out)                 # bank=None
        assert torch.equal(head(context, rois, bank=empty), out)
        torch.testing.assert_close(head(context, rois, bank=masked), out, atol=1e-6, rtol=0)


def test_the_memory_matters_only_to_its_keyframe_and_not_its_order():
    head = memory_head()
    full = torch.tensor([[H, W]] * 3)
    context, rois = padded_maps(full), boxes_inside(full)
    g = torch.Generator().manual_seed(3)
    mem, mask = torch.randn(3, 4, 8, generator=g), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1],
                                                                 [0, 0, 0, 0]]).bool()
    with torch.no_grad():
        out = head(context, rois, bank=(mem, mask))
        other = mem.clone()
        other[1] += 1.0                                              # keyframe 1's memory only
        moved = head(context, rois, bank=(other, mask))
        b = rois[:, 0].long()
        assert torch.equal(moved[b != 1], out[b != 1])
        assert not torch.allclose(moved[b == 1], out[b == 1], atol=1e-4)
        perm = torch.tensor([3, 1, 0, 2])
        torch.testing.assert_close(head(context, rois, bank=(mem[:, perm], mask[:, perm])), out,
                                   atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="do not fit"):
            head(context, rois, bank=(torch.zeros(3, 2, 5), torch.ones(3, 2, dtype=torch.bool)))
    head.train()
    head(context, rois, bank=(mem, mask)).square().sum().backward()
    assert head.mem_proj.weight.grad.abs().sum() > 0


def test_mem_time_tells_the_memory_slots_apart_by_their_second():
    """``mem_time``: the bank reader gives each slot's second relative to the keyframe, and
    a learned embedding of it joins the slot's token; at the start (zeros) it changes
    nothing, once learned the same slot at another second counts otherwise."""
    torch.manual_seed(0)
    head = build_head("t_only", C, K, width=8, num_heads=2, window=3, mem_time=True).eval()
    assert head.bank_request.times and not memory_head().bank_request.times
    full = torch.tensor([[H, W]] * 3)
    context, rois = padded_maps(full), boxes_inside(full)
    g = torch.Generator().manual_seed(4)
    mem, mask = torch.randn(3, 2, 8, generator=g), torch.ones(3, 2, dtype=torch.bool)
    before, after = torch.tensor([[-2.0, -1.0]] * 3), torch.tensor([[1.0, 2.0]] * 3)
    with torch.no_grad():
        out = head(context, rois, bank=(mem, mask, before))
        assert torch.equal(head(context, rois, bank=(mem, mask, after)), out)   # zeros
        head.mem_time_embed.normal_()
        assert not torch.allclose(head(context, rois, bank=(mem, mask, after)),
                                  head(context, rois, bank=(mem, mask, before)), atol=1e-4)
        far = torch.tensor([[-30.0, 30.0]] * 3)                 # clipped to the window's ends
        torch.testing.assert_close(head(context, rois, bank=(mem, mask, far)),
                                   head(context, rois, bank=(mem, mask, far.clamp(-3, 3))))
        with pytest.raises(ValueError, match="slots, mask, times") as err:
            head(context, rois, bank=(mem, mask))
    assert "\n" not in str(err.value)
