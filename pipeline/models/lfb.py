"""``lfb``: the Long-Term Feature Bank operator FBO-NL (Wu et al., CVPR 2019).

Every current actor attends to the banked actor vectors of its video in the window
[t-w, t+w] (default w = 30 s: the paper's 60 s window, the bank's vectors at t included)
through ``num_layers`` stacked non-local layers; the result is concatenated with A_i.
Shapes for B keyframes, N actors, S bank slots per keyframe, C' = bank channels::

    A       = actors(context, rois)                    (N, C)     RoIAlign 7x7 + max-pool
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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import BankRequest, Head, HeadConfig, bank_slots
from .packing import masked_softmax


@dataclass(frozen=True)
class LFBConfig(HeadConfig):
    head = "lfb"
    hidden_dim: int = 512             # d
    bank_dim: int | None = None       # C', channels of a banked actor vector (None: C)
    window: int = 30                  # w: seconds either side of the keyframe
    max_per_step: int | None = 5      # banked actors per second (None: all)
    num_layers: int = 2               # FBO-NL layers
    nl_dropout: float = 0.2           # on the input, the bank and each layer's output
    dropout: float = 0.3              # before the classifier
    zero_init: bool = True            # the layers' output projections start at zero
    roi_size: int = 7                 # RoIAlign output size

    def __post_init__(self) -> None:
        self.check_range("hidden_dim", 1)
        if self.bank_dim is not None:
            self.check_range("bank_dim", 1)
        self.check_range("window", 0)
        if self.max_per_step is not None:
            self.check_range("max_per_step", 1)
        self.check_range("num_layers", 0)
        self.check_dropout("nl_dropout", "dropout")
        self.check(isinstance(self.zero_init, bool), "zero_init", "true or false")
        self.check_range("roi_size", 1)


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


class LFBHead(Head):
    Config = LFBConfig
    config: LFBConfig

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        cfg = self.config
        d, bank_dim = cfg.hidden_dim, cfg.bank_dim or in_channels
        self.reduce = nn.Linear(in_channels, d)
        self.bank_proj = nn.Linear(bank_dim, d)
        self.input_dropout = nn.Dropout(cfg.nl_dropout)
        self.bank_dropout = nn.Dropout(cfg.nl_dropout)
        self.layers = nn.ModuleList(
            BankNonLocal(d, cfg.nl_dropout, cfg.zero_init) for _ in range(cfg.num_layers))
        self.add_classifier(in_channels + d, num_classes)
        self.bank_request = BankRequest("lfb", cfg.window, cfg.max_per_step,
                                        exclude_current=False, dim=bank_dim)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        b = rois[:, 0].long()                                        # (N,)
        a = self.actors(context, rois, valid)                        # (N, C), image cells only
        x = self.input_dropout(self.reduce(a))                       # (N, d)
        mem, mask = self.slots(bank, a, len(context))                # (B, S, C'), (B, S)
        mem = self.bank_dropout(self.bank_proj(mem))                 # (B, S, d)
        for layer in self.layers:
            x = layer(x, mem[b], mask[b])                            # (N, d)
        return [a, x]                                                # [(N, C), (N, d)]

    def slots(self, bank: Any, a: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """``bank`` = (slots (B, S, C'), mask (B, S)) or None (no slots), checked."""
        dim = self.bank_proj.in_features
        return bank_slots(bank, (dim,), batch_size, a, f"{dim}-d actor vectors")
