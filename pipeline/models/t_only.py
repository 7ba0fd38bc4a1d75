"""``t_only``: the T-only relation head (Feng et al. 2021, AVA-Kinetics 2021 winner).

T token sequences: the sequence at time bin t holds one token per person of the keyframe,
the person's feature at t pooled over its RoI; a transformer encoder shared by the T bins
relates the persons at each time (:mod:`pipeline.models.encoder`)::

    P^i     = RoIAlign per time bin                       (N, C, T, 7, 7)
    token   = agg_{h,w} P^i_{t,h,w}                       (N, T, C)      agg: avg | max
    x       = Linear(token) + pos(t)                      (N, T, d)
    x       = encoder over the persons at each t          (N, T, d)      within each keyframe
    logits  = Linear(Dropout(mean_t x))                   (N, K)

T-only with memory (``window`` set): each time bin's sequence also holds the keyframe's
memory tokens, ``Linear(m_s)`` for the S pooled person features m_s (d,) of the keyframes
within ±window s (the ``memory`` bank, made by the stage-one t_only: ``acar bank --kind
memory``; the keyframe's own second left out), fine-tuned from the stage-one head
(``train --init``)::

    x_t     = encoder([persons at t; Linear(m_1..m_S)])    (N, T, d)      memory outputs dropped
    m_s    += E[dt_s]     with ``mem_time``: slot s's second dt_s relative to the keyframe

Reads (B, C, T, H, W) maps (``extract.temporal: T``).  Defaults: depth 1, num_heads 4,
width d = 256, agg avg, MLP 4d, pos true, dropout 0.0, roi_size 7; window null (no memory;
the issue: about 10 s), max_per_step 5 memory persons per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import BankRequest
from .encoder import SequenceConfig, SequenceHead, aggregate, sinusoid


@dataclass(frozen=True)
class TOnlyConfig(SequenceConfig):
    head = "t_only"
    window: int | None = None         # memory bank: seconds either side (None: no memory)
    max_per_step: int | None = 5      # memory persons per second (None: all)
    mem_time: bool = False            # add a learned embedding of each memory slot's second
                                      # relative to the keyframe (-window..window)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window is not None:
            self.check_range("window", 1)
        if self.max_per_step is not None:
            self.check_range("max_per_step", 1)


class TOnlyHead(SequenceHead):
    Config = TOnlyConfig
    config: TOnlyConfig

    def add_memory(self) -> None:
        cfg = self.config
        if cfg.window is not None:
            self.bank_request = BankRequest("memory", cfg.window, cfg.max_per_step, True,
                                            cfg.width, times=cfg.mem_time)
            self.mem_proj = nn.Linear(cfg.width, cfg.width)
            if cfg.mem_time:              # zero at the start: no time, as without it
                self.mem_time_embed = nn.Parameter(torch.zeros(2 * cfg.window + 1, cfg.width))

    def tokens(self, p: Tensor) -> Tensor:
        return aggregate(p, (3, 4), self.config.agg).transpose(1, 2)      # (N, T, C)

    def positions(self, p: Tensor) -> Tensor:
        return sinusoid(torch.arange(p.shape[2]), self.config.width)      # (T, d)
