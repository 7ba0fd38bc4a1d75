"""``acfb``: ACAR-Net with the Actor-Context Feature Bank (Pan et al., CVPR 2021, Sec. 3.3).

ACAR's first-order part runs live on the current keyframe (so gradients flow); then HR2O-NL
blocks let every current actor attend, location by location, to the actors of its own
keyframe (live maps) *and* to the banked first-order maps of all actors in the window
[t-w, t+w] of the same video (a frozen bank made once by a trained ``acar``:
``acar bank --kind acfb``).  Shapes for B keyframes, N actors, S bank slots per keyframe::

    A, F    = first_order(context, rois)          (N, D), (N, d, H-2, W-2)   as in ``acar``
    F       = pool(F)                             (N, d, h, w)   pool: the bank's --pool
    L, m    = bank                                (B, S, d, h, w), (B, S)    m: True = real slot
    per block (``depth`` = 2), actor i of keyframe b, every location p:
      x_j   = [F_j : j in keyframe b] ++ [L_bs : m_bs]          live (updated) + banked (fixed)
      M_i(p)= sum_j softmax_j(Q F_i(p) . K x_j(p) / sqrt(d)) V x_j(p)
      F_i  <- F_i + Dropout(Conv(ReLU(GroupNorm(M_i))))
    logits  = Linear(Dropout([ReLU(Linear(A)); AvgPool(F)]))  (N, K)

The bank gives a keyframe its window *without* second t itself (``exclude_current``): the
current actors are there as live maps.  Masked slots are zeroed and get the most negative
finite score, so their attention weight is exactly 0.  With an empty bank (``bank=None`` or
every slot masked) the head computes exactly ``acar`` with ``hr2o="nl"`` and the matching
``downsample``; the parameters are the same (same names), so an acar checkpoint's
``state_dict`` loads into it.

Defaults: ACAR's (reduce_dim 1024, hidden_dim 512, kernel_size 3, hr2o_dropout 0.2,
dropout 0.0, roi_size 7), ``pool`` = "none" (no max-pool before HR2O: full map detail),
``window`` w = 10 s, ``depth`` = 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .acar import BANK_POOL_DOWNSAMPLE, ACARHead
from .actor import group_actors
from .base import BankRequest
from .keyframes import masked_softmax, pack, unpack


def bank_message(msg: nn.Module, x: Tensor, index: Tensor, mask: Tensor, mem: Tensor,
                 mem_mask: Tensor) -> Tensor:
    """HR2O-NL message (``msg`` holds the q, k, v convs) over live maps + bank slots.

    x (N, d, h, w) live maps, index/mask (B, M) from ``group_actors``, mem (B, S, d, h, w)
    bank slots, mem_mask (B, S) -> (N, d, h, w).
    """
    B, S = mem.shape[:2]
    d = x.shape[1]
    mem = mem.flatten(0, 1)                                            # (B*S, d, h, w)
    q = pack(msg.q(x), index)                                          # (B, M, d, h, w)
    k = torch.cat([pack(msg.k(x), index), msg.k(mem).unflatten(0, (B, S))], 1)  # (B, M+S, ...)
    v = torch.cat([pack(msg.v(x), index), msg.v(mem).unflatten(0, (B, S))], 1)  # (B, M+S, ...)
    keep = torch.cat([mask, mem_mask], 1)                              # (B, M+S)
    scores = torch.einsum("bichw,bjchw->bijhw", q, k) / d**0.5         # (B, M, M+S, h, w)
    att = masked_softmax(scores, keep[:, None, :, None, None], dim=2)  # over j
    y = torch.einsum("bijhw,bjchw->bichw", att, v)                     # (B, M, d, h, w)
    return unpack(y, index, mask)                                      # (N, d, h, w)


class ACFBHead(ACARHead):
    def __init__(self, in_channels: int, num_classes: int, reduce_dim: int = 1024,
                 hidden_dim: int = 512, pool: str = "none", window: int = 10, depth: int = 2,
                 kernel_size: int = 3, hr2o_dropout: float = 0.2, dropout: float = 0.0,
                 bias: bool = False, roi_size: int = 7):
        if pool not in BANK_POOL_DOWNSAMPLE:
            raise ValueError(f"unknown pool '{pool}'; choose from {sorted(BANK_POOL_DOWNSAMPLE)}")
        super().__init__(in_channels, num_classes, reduce_dim, hidden_dim,
                         BANK_POOL_DOWNSAMPLE[pool], "nl",
                         depth, kernel_size, hr2o_dropout, dropout, bias, roi_size)
        self.bank_request = BankRequest("acfb", window, None, exclude_current=True,
                                        dim=hidden_dim, pool=pool)

    def relation_maps(self, context: Tensor, rois: Tensor, bank=None,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A (N, D) and the relation maps F (N, d, h, w) after the bank blocks, before
        pooling; ``forward`` (ACAR's) pools them and classifies."""
        a, f = self.first_order(context, rois)                       # (N, D), (N, d, H-2, W-2)
        f = self.downsample(f)                                       # (N, d, h, w)
        mem, mem_mask = self.slots(bank, f, len(context))            # (B, S, d, h, w), (B, S)
        index, mask = group_actors(rois, len(context))               # (B, M), (B, M)
        for block in self.hr2o.blocks:
            m = bank_message(block.message, f, index, mask, mem, mem_mask)  # (N, d, h, w)
            f = f + block.dropout(block.conv(block.norm(m).relu()))
        return a, f

    @staticmethod
    def slots(bank, f: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """``bank`` = (slots (B, S, d, h, w), mask (B, S)) or None (no slots), checked."""
        if bank is None:
            return (f.new_zeros(batch_size, 0, *f.shape[1:]),
                    torch.zeros(batch_size, 0, dtype=torch.bool, device=f.device))
        mem, mem_mask = bank
        if mem.shape[0] != batch_size or tuple(mem.shape[2:]) != tuple(f.shape[1:]):
            raise ValueError(f"bank slots {tuple(mem.shape)} do not fit {batch_size} keyframes "
                             f"of maps {tuple(f.shape[1:])}: the bank's --pool, view or "
                             "hidden_dim differs from the head's")
        mem_mask = mem_mask.to(torch.bool)
        mem = torch.where(mem_mask[:, :, None, None, None], mem.to(f.dtype), 0.0)
        return mem, mem_mask
