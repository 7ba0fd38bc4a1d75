"""High-order Relation Reasoning Operators (HR2O) of ACAR-Net, over actor-context maps.

Input: the first-order actor-context relation maps F (N, d, h, w) of all actors in the
batch, and the keyframe grouping ``index``/``mask`` (B, M) from ``group_actors``.  Each
actor exchanges messages only with the actors of its own keyframe (itself included).

Every variant is a stack of ``depth`` residual blocks that differ only in the message::

    m_i   = message(F_i, {F_j : j in keyframe})      (d, h, w)
    F_i  <- F_i + Dropout(Conv(ReLU(Norm(m_i))))     (d, h, w)

with Norm = GroupNorm(1, d): LayerNorm over (C, H, W) with a per-channel affine, as in the
official ACAR-Net code; Conv has kernel ``kernel_size`` (3, padding 1, no bias); Dropout 0.2.

Messages (``kind``):

* ``nl`` (default, ACAR-Net): modified non-local block.  Q, K, V = Conv_k(F) (no bias);
  attention over actors, separately at every location p:
  ``m_i(p) = sum_j softmax_j(Q_i(p) . K_j(p) / sqrt(d)) V_j(p)``.
* ``avg``: parameter-free, ``m_i`` = masked mean of F_j over the keyframe's actors.
* ``rn``: relation network over actor-pair-context triplets,
  ``m_i = mean_j ReLU(Conv_k([F_i; F_j]))``.
* ``gattn``: graph attention (GAT, one head), ``z = Conv_k(F)``,
  ``e_ij(p) = LeakyReLU_0.2(a_i . z_i(p) + a_j . z_j(p))``,
  ``m_i(p) = sum_j softmax_j(e_ij(p)) z_j(p)``, scores per location.

The ``nl`` message (and so a block or a stack of ``nl`` blocks) also takes an optional
``memory = (mem (B, S, d, h, w), mem_mask (B, S))``: S fixed maps per keyframe that every
actor of the keyframe attends to as well, as keys and values beside the live actors (the
acfb bank, see ``acfb.py``); masked memory slots get weight exactly 0.

Heads see only the image: blocks and stacks take ``valid`` (N, 2), the (rows, cols) of each
actor's map inside the image (None: the whole map), and ``x`` zeroed outside.  Every message
reads one cell of every actor at a time, so at image cells it is the message of the cropped
maps; a block normalises over the image cells only and zeroes the cells outside again
(:mod:`pipeline.models.masking`), so its output is the cropped block's, 0 outside.

Note: the official code uses 3x3 Q/K/V and output convs by default (``kernel_size=3``);
``kernel_size=1`` gives the 1x1 variant of the original non-local block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .masking import masked_group_norm, zero_outside
from .packing import masked_mean, masked_softmax, pack, unpack

KINDS = ("nl", "avg", "rn", "gattn")
Memory = tuple[Tensor, Tensor]   # (mem (B, S, d, h, w), mem_mask (B, S) bool, True = real)


def conv(dim_in: int, dim_out: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(dim_in, dim_out, kernel_size, padding=kernel_size // 2, bias=bias)


class NonLocalMessage(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.q, self.k, self.v = (conv(dim, dim, kernel_size) for _ in range(3))

    def forward(self, x: Tensor, index: Tensor, mask: Tensor,
                memory: Memory | None = None) -> Tensor:
        """x (N, d, h, w), index/mask (B, M) from ``group_actors``, memory (optional, see
        the module docstring) -> messages (N, d, h, w)."""
        d = x.shape[1]
        q, k, v = (pack(f(x), index) for f in (self.q, self.k, self.v))  # (B, M, d, h, w)
        keep = mask                                                      # (B, M)
        if memory is not None:   # keys and values: the live actors, then the memory slots
            mem, mem_mask = memory                                       # (B, S, d, h, w)
            B, S = mem.shape[:2]
            mem = mem.flatten(0, 1)                                      # (B*S, d, h, w)
            k = torch.cat([k, self.k(mem).unflatten(0, (B, S))], 1)      # (B, M+S, d, h, w)
            v = torch.cat([v, self.v(mem).unflatten(0, (B, S))], 1)      # (B, M+S, d, h, w)
            keep = torch.cat([mask, mem_mask], 1)                        # (B, M+S)
        scores = torch.einsum("bichw,bjchw->bijhw", q, k) / d**0.5       # (B, M, M(+S), h, w)
        att = masked_softmax(scores, keep[:, None, :, None, None], dim=2)  # over j
        y = torch.einsum("bijhw,bjchw->bichw", att, v)                   # (B, M, d, h, w)
        return unpack(y, index, mask)                                    # (N, d, h, w)


class AverageMessage(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()

    def forward(self, x: Tensor, index: Tensor, mask: Tensor) -> Tensor:
        xs = pack(x, index)                                              # (B, M, d, h, w)
        y = masked_mean(xs, mask[:, :, None, None, None], dim=1)         # (B, d, h, w)
        return unpack(y[:, None].expand_as(xs), index, mask)             # (N, d, h, w)


class RelationMessage(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        # g([F_i; F_j]) = ReLU(Conv([F_i; F_j])), the conv split into its F_i and F_j halves
        self.g_i = conv(dim, dim, kernel_size, bias=True)
        self.g_j = conv(dim, dim, kernel_size)

    def forward(self, x: Tensor, index: Tensor, mask: Tensor) -> Tensor:
        gi, gj = pack(self.g_i(x), index), pack(self.g_j(x), index)      # (B, M, d, h, w)
        pairs = (gi[:, :, None] + gj[:, None, :]).relu()                 # (B, M, M, d, h, w)
        y = masked_mean(pairs, mask[:, None, :, None, None, None], dim=2)  # (B, M, d, h, w)
        return unpack(y, index, mask)                                    # (N, d, h, w)


class GraphAttentionMessage(nn.Module):
    def __init__(self, dim: int, kernel_size: int, negative_slope: float = 0.2):
        super().__init__()
        self.negative_slope = negative_slope
        self.w = conv(dim, dim, kernel_size)
        # a^T [z_i; z_j] = a_i . z_i + a_j . z_j
        self.a_i = nn.Conv2d(dim, 1, 1, bias=False)
        self.a_j = nn.Conv2d(dim, 1, 1, bias=False)

    def forward(self, x: Tensor, index: Tensor, mask: Tensor) -> Tensor:
        z = self.w(x)                                                    # (N, d, h, w)
        zs = pack(z, index)                                              # (B, M, d, h, w)
        si = pack(self.a_i(z)[:, 0], index)                              # (B, M, h, w)
        sj = pack(self.a_j(z)[:, 0], index)                              # (B, M, h, w)
        e = F.leaky_relu(si[:, :, None] + sj[:, None, :], self.negative_slope)  # (B,M,M,h,w)
        att = masked_softmax(e, mask[:, None, :, None, None], dim=2)     # over j
        y = torch.einsum("bijhw,bjchw->bichw", att, zs)                  # (B, M, d, h, w)
        return unpack(y, index, mask)                                    # (N, d, h, w)


MESSAGES: dict[str, type[nn.Module]] = {
    "nl": NonLocalMessage,
    "avg": AverageMessage,
    "rn": RelationMessage,
    "gattn": GraphAttentionMessage,
}


class HR2OBlock(nn.Module):
    """F <- F + Dropout(Conv(ReLU(GroupNorm(message(F))))), over the cells inside ``valid``."""

    def __init__(self, kind: str, dim: int, kernel_size: int = 3, dropout: float = 0.2,
                 mlp_1x1: bool = False):
        super().__init__()
        self.message = MESSAGES[kind](dim, kernel_size)
        self.norm = nn.GroupNorm(1, dim)
        self.conv = conv(dim, dim, 1 if mlp_1x1 else kernel_size)   # ACAR-Net's mlp_1x1
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, index: Tensor, mask: Tensor, memory: Memory | None = None,
                valid: Tensor | None = None) -> Tensor:
        """x (N, d, h, w), 0 outside ``valid`` (N, 2) | None -> (N, d, h, w), 0 outside."""
        if memory is None:
            m = self.message(x, index, mask)                             # (N, d, h, w)
        elif isinstance(self.message, NonLocalMessage):
            m = self.message(x, index, mask, memory)                     # (N, d, h, w)
        else:
            raise ValueError("only the 'nl' HR2O message reads a memory")
        y = self.conv(masked_group_norm(m, valid, self.norm).relu())    # norm: 0 outside
        return zero_outside(x + self.dropout(y), valid)                  # (N, d, h, w)


class HR2O(nn.Module):
    """``depth`` HR2O blocks of one ``kind``: (N, d, h, w) -> (N, d, h, w)."""

    def __init__(self, kind: str, dim: int, depth: int = 2, kernel_size: int = 3,
                 dropout: float = 0.2, mlp_1x1: bool = False):
        super().__init__()
        if kind not in MESSAGES:
            raise ValueError(f"unknown hr2o '{kind}'; choose from {sorted(MESSAGES)}")
        self.blocks = nn.ModuleList(
            HR2OBlock(kind, dim, kernel_size, dropout, mlp_1x1) for _ in range(depth))

    def forward(self, x: Tensor, index: Tensor, mask: Tensor, memory: Memory | None = None,
                valid: Tensor | None = None) -> Tensor:
        """x (N, d, h, w), 0 outside ``valid`` (N, 2) | None -> (N, d, h, w), 0 outside."""
        for block in self.blocks:
            x = block(x, index, mask, memory, valid)
        return x
