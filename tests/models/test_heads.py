"""Contract tests for every head in HEADS (tiny sizes, CPU, 1 thread)."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import HEADS, build_head
from pipeline.models.actor import group_actors
from pipeline.models.hr2o import MESSAGES
from tests.models.batches import C, K, alone, make_batch

torch.set_num_threads(1)

ACAR = dict(reduce_dim=16, hidden_dim=8)

# id -> (head name, hparams, actors see other actors of their keyframe)
CONFIGS = {
    "linear": ("linear", {}, False),
    "linear-norm": ("linear", dict(norm="batch"), False),
    "actor_actor": ("actor_actor", dict(hidden_dim=8, num_heads=2), True),
    "acrn": ("acrn", dict(hidden_dim=8), False),
    **{f"acar-{k}": ("acar", dict(ACAR, hr2o=k), True) for k in MESSAGES},
    "acar-nl-none-d1": ("acar", dict(ACAR, hr2o="nl", downsample="none", depth=1), True),
    "acar-gattn-max4x4-d3": ("acar", dict(ACAR, hr2o="gattn", downsample="max4x4", depth=3),
                             True),
    "acar-rn-global-k1": ("acar", dict(ACAR, hr2o="rn", downsample="global", kernel_size=1),
                          True),
    "atr": ("atr", dict(hidden_dim=8), False),
    "atr-add": ("atr", dict(hidden_dim=8, fuse="add"), False),
    "atr-pos": ("atr", dict(hidden_dim=8, pos=True), False),
    "atr-heads": ("atr", dict(hidden_dim=8, pos=True, num_heads=4), False),
    "atr-norm": ("atr", dict(hidden_dim=8, pos=True, norm="batch"), False),
    **{f"{h}-{agg}": (h, dict(width=8, num_heads=2, agg=agg), True)
       for h in ("s_only", "t_only") for agg in ("avg", "max")},
    "t_only-d2-nopos": ("t_only", dict(width=8, num_heads=2, depth=2, pos=False), True),
}
TIME_BINS = 3   # the time bins of the context of the heads that read time
IDS = list(CONFIGS)


def make_head(cid: str, seed: int = 0) -> torch.nn.Module:
    name, hparams, _ = CONFIGS[cid]
    torch.manual_seed(seed)
    return build_head(name, C, K, **hparams).eval()


def batch_of(cid: str, counts=(1, 2, 4), seed: int = 0):
    """make_batch, with time bins for a head that reads time (s_only, t_only)."""
    temporal = HEADS[CONFIGS[cid][0]].temporal
    return make_batch(counts, seed, time=TIME_BINS if temporal else None)


def test_every_head_is_tested():
    from tests.models.test_bank_heads import BANK_HEADS  # heads that read a bank: tested there

    assert {name for name, _, _ in CONFIGS.values()} | BANK_HEADS == set(HEADS)


@pytest.mark.parametrize("cid", IDS)
def test_output_shape(cid):
    context, rois = batch_of(cid, (1, 2, 4))
    with torch.no_grad():
        out = make_head(cid)(context, rois)
    assert out.shape == (7, K)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cid", IDS)
def test_permutation_equivariance(cid):
    head = make_head(cid)
    context, rois = batch_of(cid, (1, 2, 4))
    perm = torch.randperm(len(rois), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = head(context, rois)
        # permute the rows (within and across keyframes)
        torch.testing.assert_close(head(context, rois[perm]), out[perm], atol=1e-5, rtol=0)
        # relabel the keyframes too: keyframe b becomes keyframe kperm_inv[b]
        kperm = torch.tensor([2, 0, 1])
        relabelled = rois.clone()
        relabelled[:, 0] = torch.argsort(kperm)[rois[:, 0].long()].float()
        torch.testing.assert_close(head(context[kperm], relabelled), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_single_actor_keyframe(cid):
    head = make_head(cid)
    context, rois = batch_of(cid, (1,))
    with torch.no_grad():
        out = head(context, rois)
    assert out.shape == (1, K)
    assert torch.isfinite(out).all()
    context, rois = batch_of(cid, (1, 1, 1))
    with torch.no_grad():
        assert torch.isfinite(head(context, rois)).all()


@pytest.mark.parametrize("cid", IDS)
def test_keyframes_without_actors(cid):
    """A keyframe with no actors (all-masked row) changes nothing and leaves grads finite;
    no actors at all gives (0, K)."""
    head = make_head(cid)
    context, rois = batch_of(cid, (2, 0, 3))
    with torch.no_grad():
        out = head(context, rois)
        ctx_0, rois_0, rows = alone(context, rois, 0)
        torch.testing.assert_close(head(ctx_0, rois_0), out[rows], atol=1e-5, rtol=0)
        assert head(context, rois[:0]).shape == (0, K)
    head.train()(context, rois).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("cid", IDS)
def test_keyframes_are_independent(cid):
    """Each keyframe's outputs equal those of running it alone (no padding at all then)."""
    head = make_head(cid)
    context, rois = batch_of(cid, (1, 2, 4))
    with torch.no_grad():
        out = head(context, rois)
        for b in range(3):
            ctx_b, rois_b, rows = alone(context, rois, b)
            torch.testing.assert_close(head(ctx_b, rois_b), out[rows], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cid", IDS)
@pytest.mark.parametrize("small", [1, 2])
def test_padded_slots_are_invisible(cid, small):
    """A small keyframe batched with a large one (so padded, its padding copying an actor of
    the large keyframe with huge features) gives the same outputs as alone."""
    head = make_head(cid)
    context, rois = batch_of(cid, (small, 5), seed=3)
    context[1] *= 100.0
    with torch.no_grad():
        out = head(context, rois)
        ctx_0, rois_0, rows = alone(context, rois, 0)
        torch.testing.assert_close(head(ctx_0, rois_0), out[rows], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cid", IDS)
def test_other_actors_matter_only_in_relation_heads(cid):
    """Moving one actor changes the other actors of its keyframe iff the head is relational
    (guards against relation heads that silently ignore their neighbours)."""
    head = make_head(cid)
    relational = CONFIGS[cid][2]
    context, rois = batch_of(cid, (4,))
    moved = rois.clone()
    moved[0, 1:] = torch.tensor([0.0, 0.0, 7.5, 7.5])
    with torch.no_grad():
        before, after = head(context, rois)[1:], head(context, moved)[1:]
    changed = not torch.allclose(before, after, atol=1e-4, rtol=0)
    assert changed == relational


@pytest.mark.parametrize("cid", IDS)
def test_gradients_reach_all_parameters(cid):
    head = make_head(cid).train()
    context, rois = batch_of(cid, (1, 2, 4))
    context.requires_grad_(True)
    head(context, rois).square().sum().backward()
    assert context.grad is not None and torch.isfinite(context.grad).all()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if p.ndim >= 2:  # main weights: really trained, not just connected
            assert p.grad.abs().sum() > 0, name


def test_unknown_head_names_the_choices():
    with pytest.raises(ValueError) as err:
        build_head("acar_v2", C, K)
    for name in HEADS:
        assert name in str(err.value)


# --- HR2O messages against a plain per-keyframe loop (no packing, no masks) ---

def reference_message(kind: str, msg: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x (n, d, h, w): the actors of ONE keyframe -> messages (n, d, h, w), pair by pair."""
    n, d = x.shape[:2]
    out = []
    for i in range(n):
        if kind == "nl":
            q, k, v = msg.q(x[i:i + 1]), msg.k(x), msg.v(x)             # (1|n, d, h, w)
            w = torch.softmax((q * k).sum(1) / d**0.5, dim=0)           # (n, h, w)
            out.append((w[:, None] * v).sum(0))
        elif kind == "avg":
            out.append(x.mean(0))
        elif kind == "rn":
            pairs = [msg.g_i(x[i:i + 1]) + msg.g_j(x[j:j + 1]) for j in range(n)]
            out.append(torch.cat(pairs).relu().mean(0))
        elif kind == "gattn":
            z = msg.w(x)
            e = torch.nn.functional.leaky_relu(msg.a_i(z[i:i + 1]) + msg.a_j(z), 0.2)
            w = torch.softmax(e[:, 0], dim=0)                           # (n, h, w)
            out.append((w[:, None] * z).sum(0))
    return torch.stack(out)


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_hr2o_message_matches_reference(kind):
    torch.manual_seed(0)
    msg = MESSAGES[kind](8, 3).eval()
    counts = (3, 1, 2)
    b = torch.tensor([0, 2, 0, 1, 2, 0])
    assert sorted(torch.bincount(b).tolist()) == sorted(counts)
    x = torch.randn(len(b), 8, 4, 4)
    rois = torch.cat([b[:, None].float(), torch.zeros(len(b), 4)], dim=1)
    index, mask = group_actors(rois, 3)
    with torch.no_grad():
        got = msg(x, index, mask)
        for k in range(3):
            rows = (b == k).nonzero()[:, 0]
            torch.testing.assert_close(got[rows], reference_message(kind, msg, x[rows]),
                                       atol=1e-5, rtol=1e-5)


def test_nonlocal_message_with_memory_matches_reference():
    """With a memory, each actor attends to its keyframe's actors and real memory slots."""
    torch.manual_seed(0)
    msg = MESSAGES["nl"](8, 3).eval()
    b = torch.tensor([0, 2, 0, 1, 2, 0])
    x = torch.randn(len(b), 8, 4, 4)
    rois = torch.cat([b[:, None].float(), torch.zeros(len(b), 4)], dim=1)
    index, mask = group_actors(rois, 3)
    mem = torch.randn(3, 2, 8, 4, 4)
    mem_mask = torch.tensor([[True, True], [False, False], [True, False]])
    with torch.no_grad():
        got = msg(x, index, mask, (mem, mem_mask))
        for k in range(3):
            rows = (b == k).nonzero()[:, 0]
            keys = torch.cat([x[rows], mem[k][mem_mask[k]]])            # (n + s, d, h, w)
            for row in rows.tolist():
                q, kk, v = msg.q(x[row:row + 1]), msg.k(keys), msg.v(keys)
                w = torch.softmax((q * kk).sum(1) / 8**0.5, dim=0)      # (n + s, h, w)
                torch.testing.assert_close(got[row], (w[:, None] * v).sum(0),
                                           atol=1e-5, rtol=1e-5)
        # an empty memory is no memory, bitwise
        empty = (mem[:, :0], mem_mask[:, :0])
        assert torch.equal(msg(x, index, mask, empty), msg(x, index, mask))


@pytest.mark.parametrize("kind", [k for k in MESSAGES if k != "nl"])
def test_only_nonlocal_blocks_read_a_memory(kind):
    from pipeline.models.hr2o import HR2O

    hr2o = HR2O(kind, 8, depth=1)
    x = torch.randn(2, 8, 4, 4)
    index, mask = group_actors(torch.zeros(2, 5), 1)
    with pytest.raises(ValueError, match="memory"):
        hr2o(x, index, mask, (torch.zeros(1, 1, 8, 4, 4), torch.ones(1, 1, dtype=torch.bool)))
