"""``lfb``: the Long-Term Feature Bank operator FBO-NL (Wu et al., CVPR 2019).

Every current actor attends to the banked actor vectors of its video in the window
[t-w, t+w] (default w = 30 s: the paper's 60 s window, the bank's vectors at t included)
through ``num_layers`` stacked non-local layers; the result is concatenated with A_i.
Shapes for B keyframes, N actors, S bank slots per keyframe, C' = bank channels::

    A       = actor_vectors(context, rois)             (N, C)     RoIAlign 7x7 + max-pool
    X       = Dropout(Linear(A))                       (N, d)     short-term features
    L, m    = bank                                     (B, S, C'), (B, S)   m: True = real slot
    L       = Dropout(Linear(L))                       (B, S, d)
    per layer, actor i of keyframe b:
      w_s   = softmax_s(θ(X_i) . φ(L_bs) / sqrt(d)), 0 where m_bs is False   (S,)
      X_i  <- X_i + Dropout(Out(ReLU(LayerNorm(sum_s w_s g(L_bs)))))        (d,)
    logits  = Linear(Dropout([A; X]))                  (N, K)

Following the official code (facebookresearch/video-long-term-feature-banks,
``lib/models/lfb_helper.py`` and ``lib/core/config.py``): d = ``hidden_dim`` = 512, two
layers, pre-activation (LayerNorm, ReLU) before the output projection, which starts at
zero (``zero_init``), dropout ``nl_dropout`` = 0.2 on the input, the bank and each layer's
output, dropout 0.3 before the classifier (the AVA config), at most ``max_per_step`` = 5
bank actors per second.  Two deliberate differences: masked slots get weight exactly 0
(the official code fills missing slots with zero vectors that still take part in the
softmax), so a keyframe with no actor in its window gets a zero message; and the bank
reader samples the ``max_per_step`` actors at random only in training, keeping the
highest-scoring ones at evaluation (the official code samples at test time too).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .actor import actor_vectors
from .base import BankRequest
from .keyframes import masked_softmax


class BankNonLocal(nn.Module):
    """One FBO-NL layer: X <- X + Dropout(Out(ReLU(LayerNorm(Attn(X -> L)))))."""

    def __init__(self, dim: int, dropout: float, zero_init: bool):
        super().__init__()
        self.theta, self.phi, self.g = (nn.Linear(dim, dim) for _ in range(3))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, mem: Tensor, mask: Tensor) -> Tensor:
        """x (N, d), mem (N, S, d) each actor's bank, mask (N, S) -> (N, d)."""
        q, k, v = self.theta(x), self.phi(mem), self.g(mem)            # (N, d), (N, S, d) x2
        scores = torch.einsum("nc,nsc->ns", q, k) / x.shape[1] ** 0.5  # (N, S)
        att = masked_softmax(scores, mask, dim=1) * mask               # 0 on masked slots
        y = torch.einsum("ns,nsc->nc", att, v)                         # (N, d)
        return x + self.dropout(self.out(self.norm(y).relu()))


class LFBHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, hidden_dim: int = 512,
                 bank_dim: int | None = None, window: int = 30, max_per_step: int | None = 5,
                 num_layers: int = 2, nl_dropout: float = 0.2, dropout: float = 0.3,
                 zero_init: bool = True, roi_size: int = 7):
        super().__init__()
        bank_dim = bank_dim or in_channels
        self.roi_size = roi_size
        self.reduce = nn.Linear(in_channels, hidden_dim)
        self.bank_proj = nn.Linear(bank_dim, hidden_dim)
        self.input_dropout = nn.Dropout(nl_dropout)
        self.bank_dropout = nn.Dropout(nl_dropout)
        self.layers = nn.ModuleList(
            BankNonLocal(hidden_dim, nl_dropout, zero_init) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels + hidden_dim, num_classes)
        self.bank_request = BankRequest("lfb", window, max_per_step, exclude_current=False,
                                        dim=bank_dim)

    def forward(self, context: Tensor, rois: Tensor, bank=None,
                valid: Tensor | None = None) -> Tensor:
        b = rois[:, 0].long()                                        # (N,)
        a = actor_vectors(context, rois, self.roi_size)              # (N, C)
        x = self.input_dropout(self.reduce(a))                       # (N, d)
        mem, mask = self.slots(bank, a, len(context))                # (B, S, C'), (B, S)
        mem = self.bank_dropout(self.bank_proj(mem))                 # (B, S, d)
        for layer in self.layers:
            x = layer(x, mem[b], mask[b])                            # (N, d)
        return self.fc(self.dropout(torch.cat([a, x], 1)))           # (N, K)

    def slots(self, bank, a: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """``bank`` = (slots (B, S, C'), mask (B, S)) or None (no slots), checked."""
        dim = self.bank_proj.in_features
        if bank is None:
            return (a.new_zeros(batch_size, 0, dim),
                    torch.zeros(batch_size, 0, dtype=torch.bool, device=a.device))
        mem, mask = bank
        if mem.ndim != 3 or mem.shape[0] != batch_size or mem.shape[2] != dim:
            raise ValueError(f"bank slots {tuple(mem.shape)} do not fit {batch_size} keyframes "
                             f"of {dim}-d actor vectors")
        mask = mask.to(torch.bool)
        return torch.where(mask[:, :, None], mem.to(a.dtype), 0.0), mask
