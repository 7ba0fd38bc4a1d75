"""``t_only``: the T-only relation head (Feng et al. 2021, AVA-Kinetics 2021 winner).

T token sequences: the sequence at time bin t holds one token per person of the keyframe,
the person's feature at t pooled over its RoI; a transformer encoder shared by the T bins
relates the persons at each time (:mod:`pipeline.models.encoder`)::

    P^i     = RoIAlign per time bin                       (N, C, T, 7, 7)
    token   = agg_{h,w} P^i_{t,h,w}                       (N, T, C)      agg: avg | max
    x       = Linear(token) + pos(t)                      (N, T, d)
    x       = encoder over the persons at each t          (N, T, d)      within each keyframe
    logits  = Linear(Dropout(mean_t x))                   (N, K)

Reads (B, C, T, H, W) maps (``extract.temporal: T``).  Defaults: depth 1, num_heads 4,
width d = 256, agg avg, MLP 4d, pos true, dropout 0.0, roi_size 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .encoder import SequenceConfig, SequenceHead, aggregate, sinusoid


@dataclass(frozen=True)
class TOnlyConfig(SequenceConfig):
    head = "t_only"


class TOnlyHead(SequenceHead):
    Config = TOnlyConfig
    config: TOnlyConfig

    def tokens(self, p: Tensor) -> Tensor:
        return aggregate(p, (3, 4), self.config.agg).transpose(1, 2)      # (N, T, C)

    def positions(self, p: Tensor) -> Tensor:
        return sinusoid(torch.arange(p.shape[2]), self.config.width)      # (T, d)
