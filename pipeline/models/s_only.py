"""``s_only``: the S-only relation head (Feng et al. 2021, AVA-Kinetics 2021 winner).

HW token sequences: the sequence at RoI cell (h, w) holds one token per person of the
keyframe, the person's feature there pooled over time; a transformer encoder shared by
the 7 x 7 cells relates the persons at each cell (:mod:`pipeline.models.encoder`)::

    P^i     = RoIAlign per time bin                       (N, C, T, 7, 7)
    token   = agg_t P^i_{t,h,w}                           (N, 49, C)     agg: avg | max
    x       = Linear(token) + pos(h, w)                   (N, 49, d)
    x       = encoder over the persons at each (h, w)     (N, 49, d)     within each keyframe
    logits  = Linear(Dropout(mean_{h,w} x))               (N, K)

Reads (B, C, T, H, W) maps (``extract.temporal: T``; T = 1 is allowed).  Defaults: depth 1,
num_heads 4, width d = 256, agg avg, MLP 4d, pos true, dropout 0.0, roi_size 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .encoder import SequenceConfig, SequenceHead, aggregate, sinusoid


@dataclass(frozen=True)
class SOnlyConfig(SequenceConfig):
    head = "s_only"


class SOnlyHead(SequenceHead):
    Config = SOnlyConfig
    config: SOnlyConfig

    def tokens(self, p: Tensor) -> Tensor:
        return aggregate(p, (2,), self.config.agg).flatten(2).transpose(1, 2)   # (N, s*s, C)

    def positions(self, p: Tensor) -> Tensor:
        s, d = p.shape[-1], self.config.width
        rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        return torch.cat([sinusoid(rows.reshape(-1), d // 2),
                          sinusoid(cols.reshape(-1), d - d // 2)], 1)  # (s*s, d)
