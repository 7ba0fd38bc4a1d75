"""``acrn``: Actor-Centric Relation Network (Sun et al., ECCV 2018), actor-context relations.

At every location p of the context map V, a relation feature pairs actor i with the
context cell V(p); 3x3 convs then accumulate neighbouring relations::

    A       = actors(context, rois)                             (N, C)   RoIAlign 7x7 + max
    box_i   = [x1/W, y1/H, x2/W, y2/H]                          (N, 4)   tiled over the map
    xy(p)   = [(u+0.5)/W, (v+0.5)/H] at cell (u, v)             (2, H, W)
    R_i     = ReLU(Conv1x1([V; tile(A_i); tile(box_i); xy]))    (N, d, H, W)
    R_i     = ReLU(Conv3x3(R_i)), ``num_convs`` times (pad 1)  (N, d, H, W)
    logits  = Linear(Dropout([A_i; AvgPool(R_i)]))              (N, K)

With ``valid`` (B, 2), H and W in the coordinates are the keyframe's image extents (rows,
cols), R_i is zeroed outside them before every conv (what the 3x3 convs' zero padding sees
on the cropped map), and AvgPool averages over the image cells: each keyframe gets what it
gets from its cropped map, and R is 0 outside the image.

The 1x1 conv over the concatenation is linear, so it is computed as
``Conv1x1(V)[b_i] + Linear([A_i; box_i]) + Conv1x1(xy)``, broadcast over the map: the same
result without materialising the (N, 2C+6, H, W) tile.

Defaults: ``hidden_dim`` d = 512, ``num_convs`` = 2, ``dropout`` = 0.0, ``roi_size`` = 7.
ACRN relates each actor to the scene only; actors do not see each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import Head, HeadConfig
from .masking import (
    actor_valid,
    box_embedding,
    location_embedding,
    masked_spatial_mean,
    needed,
    zero_outside,
)


@dataclass(frozen=True)
class ACRNConfig(HeadConfig):
    head = "acrn"
    hidden_dim: int = 512       # d, channels of the relation maps
    num_convs: int = 2          # 3x3 convs after the 1x1 relation conv
    dropout: float = 0.0        # before the classifier
    roi_size: int = 7           # RoIAlign output size

    def __post_init__(self) -> None:
        self.check_range("hidden_dim", 1)
        self.check_range("num_convs", 0)
        self.check_dropout("dropout")
        self.check_range("roi_size", 1)


class ACRNHead(Head):
    Config = ACRNConfig
    config: ACRNConfig
    relation_grid = (0.0, 1.0)   # cell i of R is centred on context cell 0 + 1 * i

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        d = self.config.hidden_dim
        # the 1x1 relation conv over [V; A_i; box_i; xy], split by input group
        self.rel_context = nn.Conv2d(in_channels, d, 1)
        self.rel_actor = nn.Linear(in_channels + 4, d, bias=False)
        self.rel_xy = nn.Conv2d(2, d, 1, bias=False)
        self.convs = nn.ModuleList(
            nn.Conv2d(d, d, 3, padding=1) for _ in range(self.config.num_convs))
        self.add_classifier(in_channels + d, num_classes)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        a, r, ext = self.maps(context, rois, valid)                     # (N, C), (N, d, H, W)
        return [a, masked_spatial_mean(r, ext)]                         # [(N, C), (N, d)]

    def relation_maps(self, context: Tensor, rois: Tensor, bank: Any = None,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A (N, C) and the relation maps R (N, d, H, W) before pooling (for CAMs), 0
        outside the image."""
        return self.maps(context, rois, valid)[:2]

    def maps(self, context: Tensor, rois: Tensor,
             valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """A (N, C), R (N, d, H, W) and the extents of R (N, 2) (None: the whole map)."""
        B, C, H, W = context.shape
        valid = needed(valid, context)                                  # (B, 2) | None
        b = rois[:, 0].long()                                           # (N,)
        ext = actor_valid(valid, rois)                                  # (N, 2) | None
        a = self.actors(context, rois, valid)                           # (N, C)
        box = box_embedding(rois, valid, H, W).to(a.dtype)              # (N, 4)
        xy = self.rel_xy(location_embedding(H, W, context, valid))      # (1 | B, d, H, W)
        r = (self.rel_context(context)[b]                               # (N, d, H, W)
             + self.rel_actor(torch.cat([a, box], 1))[:, :, None, None]  # (N, d, 1, 1)
             + (xy if len(xy) == 1 else xy[b]))                         # (1 | N, d, H, W)
        r = zero_outside(r.relu(), ext)       # 0 outside: the 3x3 convs' zero padding there
        for conv in self.convs:
            r = zero_outside(conv(r).relu(), ext)                       # (N, d, H, W)
        return a, r, ext

    @property
    def relation_weight(self) -> Tensor:
        """(K, d): the classifier weights that read AvgPool(R), so the class activation
        map of class k is ``sum_c relation_weight[k, c] * R[c]``."""
        return self.fc.weight[:, -self.config.hidden_dim:]
