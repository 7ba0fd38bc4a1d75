"""Contract tests for the bank heads (acfb, lfb): tiny sizes, CPU, 1 thread."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import BankRequest, build_head
from tests.models.batches import C, K, alone, make_bank, make_batch, rows_of

torch.set_num_threads(1)

BANK_HEADS = {"acfb", "lfb"}

# id -> (head name, hparams, shape of one bank slot)
CONFIGS = {
    "acfb": ("acfb", dict(reduce_dim=16, hidden_dim=8, pool="none"), (8, 6, 6)),
    "acfb-2x2": ("acfb", dict(reduce_dim=16, hidden_dim=8, pool="2x2", depth=1), (8, 3, 3)),
    "lfb": ("lfb", dict(hidden_dim=8, zero_init=False), (C,)),
    "lfb-bank12-3l": ("lfb", dict(hidden_dim=8, bank_dim=12, num_layers=3, zero_init=False),
                      (12,)),
}
IDS = list(CONFIGS)


def make_head(cid: str, seed: int = 0) -> torch.nn.Module:
    name, hparams, _ = CONFIGS[cid]
    torch.manual_seed(seed)
    return build_head(name, C, K, **hparams).eval()


def make_inputs(counts=(1, 2, 3), slots=(0, 4, 2), cid: str = "lfb", seed: int = 0):
    """Context (B, C, H, W), rois (N, 5) and a bank of ``slots[b]`` real slots (padding:
    garbage) whose items fit head ``cid``."""
    context, rois = make_batch(counts, seed)
    return context, rois, make_bank(slots, CONFIGS[cid][2], seed)


def test_bank_heads_declare_their_bank():
    """The request follows the head's config: the bank it reads must fit it."""
    for cid in IDS:
        head, cfg = make_head(cid), make_head(cid).config
        req = head.bank_request
        assert isinstance(req, BankRequest) and req.kind == CONFIGS[cid][0]
        assert req.window == cfg.window
        if req.kind == "acfb":   # banked first-order maps of the current acar, pooled alike
            assert (req.dim, req.pool, req.exclude_current) == (cfg.hidden_dim, cfg.pool, True)
            assert req.max_per_step is None
        else:                    # banked actor vectors, the current second included
            assert req.dim == (cfg.bank_dim or C) == CONFIGS[cid][2][0]
            assert (req.max_per_step, req.exclude_current) == (cfg.max_per_step, False)


@pytest.mark.parametrize("cid", IDS)
def test_output_shape_and_finite(cid):
    context, rois, bank = make_inputs(cid=cid)
    with torch.no_grad():
        out = make_head(cid)(context, rois, bank=bank)
    assert out.shape == (6, K) and torch.isfinite(out).all()
    with torch.no_grad():
        assert make_head(cid)(context, rois[:0], bank=bank).shape == (0, K)


@pytest.mark.parametrize("cid", IDS)
def test_masked_slots_are_invisible(cid):
    """An all-masked bank row (full of garbage) = an empty bank (None); garbage in the padding
    of a partly filled row = the same row without that padding."""
    head = make_head(cid)
    context, rois, (mem, mask) = make_inputs(slots=(0, 4, 2), cid=cid)
    with torch.no_grad():
        empty = head(context, rois)
        full = head(context, rois, bank=(mem, mask))
        none = head(context, rois, bank=(mem, torch.zeros_like(mask)))
        torch.testing.assert_close(none, empty, atol=1e-5, rtol=0)
        r0 = rows_of(rois, 0)                    # keyframe 0 has no slot: as with no bank
        torch.testing.assert_close(full[r0], empty[r0], atol=1e-5, rtol=0)
        trimmed = head(context, rois, bank=(mem[:, :4], mask[:, :4]))
        torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=0)
        mem2 = mem.clone()
        mem2[~mask] = 0.0                        # zero-filled padding: still invisible
        torch.testing.assert_close(head(context, rois, bank=(mem2, mask)), full, atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_the_bank_matters_only_to_its_keyframe(cid):
    head = make_head(cid)
    context, rois, (mem, mask) = make_inputs(slots=(1, 4, 2), cid=cid)
    with torch.no_grad():
        out = head(context, rois, bank=(mem, mask))
        moved = mem.clone()
        moved[1, 0] = torch.randn_like(moved[1, 0]) * 3
        after = head(context, rois, bank=(moved, mask))
    r1 = rows_of(rois, 1)
    others = torch.cat([rows_of(rois, 0), rows_of(rois, 2)])
    assert not torch.allclose(after[r1], out[r1], atol=1e-4, rtol=0)
    torch.testing.assert_close(after[others], out[others], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_slot_order_does_not_matter(cid):
    head = make_head(cid)
    context, rois, (mem, mask) = make_inputs(slots=(3, 4, 2), cid=cid)
    perm = torch.tensor([3, 1, 0, 2])
    with torch.no_grad():
        torch.testing.assert_close(head(context, rois, bank=(mem[:, perm], mask[:, perm])),
                                   head(context, rois, bank=(mem, mask)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_keyframes_are_independent(cid):
    """Each keyframe with its bank row alone gives the same outputs as in the batch."""
    head = make_head(cid)
    context, rois, (mem, mask) = make_inputs(slots=(1, 4, 2), cid=cid)
    with torch.no_grad():
        out = head(context, rois, bank=(mem, mask))
        for b in range(3):
            ctx_b, rois_b, rows = alone(context, rois, b)
            got = head(ctx_b, rois_b, bank=(mem[b:b + 1], mask[b:b + 1]))
            torch.testing.assert_close(got, out[rows], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pool,downsample", [("none", "none"), ("2x2", "max2x2"),
                                             ("4x4", "max4x4")])
def test_acfb_with_an_empty_bank_is_acar(pool, downsample):
    """Same parameters (an acar state dict loads strictly), same outputs without a bank."""
    torch.manual_seed(0)
    acar = build_head("acar", C, K, reduce_dim=16, hidden_dim=8, downsample=downsample).eval()
    acfb = build_head("acfb", C, K, reduce_dim=16, hidden_dim=8, pool=pool).eval()
    acfb.load_state_dict(acar.state_dict(), strict=True)
    context, rois = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(acfb(context, rois), acar(context, rois), atol=0, rtol=0)


def test_lfb_zero_init_starts_from_the_short_term_features():
    """With the zero-initialised output projections, the bank changes nothing at first."""
    torch.manual_seed(0)
    head = build_head("lfb", C, K, hidden_dim=8).eval()
    context, rois, bank = make_inputs(slots=(1, 4, 2), cid="lfb")
    with torch.no_grad():
        torch.testing.assert_close(head(context, rois, bank=bank), head(context, rois),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_gradients_reach_all_parameters(cid):
    head = make_head(cid).train()
    context, rois, bank = make_inputs(slots=(1, 4, 2), cid=cid)
    context.requires_grad_(True)
    head(context, rois, bank=bank).square().sum().backward()
    assert torch.isfinite(context.grad).all()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if p.ndim >= 2:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cid", IDS)
def test_deterministic_in_eval(cid):
    head = make_head(cid)
    context, rois, bank = make_inputs(slots=(1, 4, 2), cid=cid)
    with torch.no_grad():
        torch.testing.assert_close(head(context, rois, bank=bank), head(context, rois, bank=bank),
                                   atol=0, rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_bank_of_the_wrong_shape_is_refused(cid):
    head = make_head(cid)
    context, rois, (mem, mask) = make_inputs(cid=cid)
    with pytest.raises(ValueError, match="bank slots"):
        head(context, rois, bank=(mem[:2], mask[:2]))
    with pytest.raises(ValueError, match="bank slots"):
        head(context, rois, bank=(mem[..., :-1], mask))
