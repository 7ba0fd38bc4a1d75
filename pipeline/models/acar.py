"""``acar``: Actor-Context-Actor Relation Network head (Pan et al., CVPR 2021).

Shapes for B keyframes, N actors, C = ``in_channels``, D = ``reduce_dim``,
d = ``hidden_dim``, K classes::

    V       = Conv1x1(context)                            (B, D, H, W)     no bias
    A       = actors(V, rois)                             (N, D)           RoIAlign 7x7 + max
    F       = ReLU(Conv1x1([V_{b_i}; tile(A_i)]))         (N, d, H, W)     no bias
    F       = ReLU(Conv3x3(F))                            (N, d, H-2, W-2) no bias, no padding
    F       = downsample(F)                               (N, d, h, w)
    F       = HR2O(F), within each keyframe               (N, d, h, w)     see ``hr2o.py``
    logits  = Linear(Dropout([ReLU(Linear(A)); AvgPool(F)]))  (N, K)       Linear(A): D -> d

Defaults (those of the official code, ``Siyu-C/ACAR-Net``, ``models/heads/acar.py``):
``reduce_dim`` = 1024, ``hidden_dim`` = 512, ``downsample`` = "max2x2", ``hr2o`` = "nl",
``depth`` = 2 (1..3), ``kernel_size`` = 3 (Q/K/V and output convs of the HR2O blocks),
``hr2o_dropout`` = 0.2 (inside the blocks), ``dropout`` = 0.0 (before the classifier),
``bias`` = False (classifier bias), ``roi_size`` = 7.  Two options exist for checkpoints
imported from ACAR-Net (``acar import``): ``mlp_1x1`` (its R101 model: the HR2O blocks'
output conv is 1x1 while Q/K/V stay ``kernel_size``) and ``roi_aligned`` = False (its
RoIAlign call: torchvision's ``aligned=False``); the defaults keep acar's own.

``downsample``: "max2x2" = MaxPool(3, stride 2, pad 1) (h = ceil((H-2)/2)), "max4x4" =
MaxPool(5, stride 4, pad 2) (h = ceil((H-2)/4)), "global" = global max-pool (h = 1),
"none".  The context map must be at least 3x3 (the 3x3 conv has no padding).

With ``valid`` (B, 2), the (rows, cols) of each keyframe's image on the context map, every
step sees only the image (:mod:`pipeline.models.masking`): A from the image cells, F zeroed
outside the extents that conv2 and ``downsample`` leave (rows - 2, then e.g.
ceil((rows - 2) / 2)), the max-pool and the HR2O blocks' GroupNorm over the image cells,
AvgPool(F) over them too.  Each keyframe gets what it gets from its map cropped to
``[:rows, :cols]``, and F is 0 outside the image.

The 1x1 conv over [V; tile(A_i)] is linear, so it is computed as
``Conv1x1(V)[b_i] + Linear(A_i)`` broadcast over the map: the same result without
materialising the (N, 2D, H, W) tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .actor import group_actors
from .base import BANK_POOLS, Head, HeadConfig
from .hr2o import HR2O, KINDS
from .masking import (
    actor_valid,
    extent_after,
    masked_max_pool,
    masked_spatial_mean,
    needed,
    zero_outside,
)

DOWNSAMPLE = {
    "none": lambda: nn.Identity(),
    "max2x2": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "max4x4": lambda: nn.MaxPool2d(5, stride=4, padding=2),
    "global": lambda: nn.AdaptiveMaxPool2d(1),
}
BANK_POOL_DOWNSAMPLE = dict(zip(BANK_POOLS, ("none", "max2x2", "max4x4"), strict=True))



@dataclass(frozen=True)
class ACARConfig(HeadConfig):
    head = "acar"
    reduce_dim: int = 1024      # D, the 1x1 conv over the context map
    hidden_dim: int = 512       # d, channels of the relation maps
    downsample: str = "max2x2"  # one of DOWNSAMPLE
    hr2o: str = "nl"            # HR2O message, one of hr2o.KINDS
    depth: int = 2              # HR2O blocks, 1..3
    kernel_size: int = 3        # Q/K/V and output convs of the HR2O blocks, odd
    hr2o_dropout: float = 0.2   # inside the HR2O blocks
    dropout: float = 0.0        # before the classifier
    bias: bool = False          # classifier bias
    roi_size: int = 7           # RoIAlign output size
    mlp_1x1: bool = False       # the HR2O blocks' output conv 1x1 (ACAR-Net's R101 model)
    roi_aligned: bool = True    # RoIAlign's half-pixel offset (ACAR-Net: False)

    def __post_init__(self) -> None:
        self.check_range("reduce_dim", 1)
        self.check_range("hidden_dim", 1)
        self.check_choice("downsample", DOWNSAMPLE)
        self.check(isinstance(self.mlp_1x1, bool), "mlp_1x1", "true or false")
        self.check(isinstance(self.roi_aligned, bool), "roi_aligned", "true or false")
        self.check_choice("hr2o", KINDS)
        check_common(self)


def check_common(cfg: HeadConfig) -> None:
    """The checks of the fields acar and acfb share (beyond the dims)."""
    cfg.check_range("depth", 1, 3)
    k = cfg.kernel_size   # type: ignore[attr-defined]
    cfg.check(isinstance(k, int) and k >= 1 and k % 2 == 1, "kernel_size", "an odd integer >= 1")
    cfg.check_dropout("hr2o_dropout", "dropout")
    cfg.check(isinstance(cfg.bias, bool), "bias", "true or false")   # type: ignore[attr-defined]
    cfg.check_range("roi_size", 1)


class ACARHead(Head):
    Config = ACARConfig
    config: ACARConfig
    classifier_name = "fc2"

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        cfg = self.config   # acfb's config reads the same fields (downsample, hr2o derived)
        D, d = cfg.reduce_dim, cfg.hidden_dim
        self.reduce = nn.Conv2d(in_channels, D, 1, bias=False)
        # first-order actor-context relations; conv1 over [V; A_i] split by input group
        self.conv1_context = nn.Conv2d(D, d, 1, bias=False)
        self.conv1_actor = nn.Linear(D, d, bias=False)
        self.conv2 = nn.Conv2d(d, d, 3, bias=False)
        self.downsample = DOWNSAMPLE[cfg.downsample]()
        self.hr2o = HR2O(cfg.hr2o, d, cfg.depth, cfg.kernel_size, cfg.hr2o_dropout,
                         cfg.mlp_1x1)
        self.fc1 = nn.Linear(D, d, bias=False)
        self.add_classifier(2 * d, num_classes, bias=cfg.bias)

    def first_order(self, context: Tensor, rois: Tensor,
                    valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The first-order part: A (N, D) and the actor-context maps F (N, d, H-2, W-2),
        before ``downsample`` (what ``acar bank --kind acfb`` stores, after its own pool);
        F is 0 outside the image."""
        return self._first_order(context, rois, valid)[:2]

    def _first_order(self, context: Tensor, rois: Tensor, valid: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        """A (N, D), F (N, d, H-2, W-2) and the extents of F (N, 2) (None: the whole map)."""
        valid = needed(valid, context)                              # (B, 2) | None
        ext = extent_after(actor_valid(valid, rois), self.conv2)   # (N, 2): rows-2, cols-2
        if ext is not None and len(ext) and int(ext.min()) < 1:
            raise ValueError("valid: acar needs at least 3x3 context cells inside the image, "
                             f"got (rows, cols) down to {tuple((ext.amin(0) + 2).tolist())}")
        b = rois[:, 0].long()                                       # (N,)
        v = self.reduce(context)                                    # (B, D, H, W)
        a = self.actors(v, rois, valid)                             # (N, D)
        f = self.conv1_context(v)[b] + self.conv1_actor(a)[:, :, None, None]  # (N, d, H, W)
        f = self.conv2(f.relu()).relu()       # (N, d, H-2, W-2), no padding: cell i reads i..i+2
        return a, zero_outside(f, ext), ext

    def _pooled_first_order(self, context: Tensor, rois: Tensor, valid: Tensor | None
                            ) -> tuple[Tensor, Tensor, Tensor | None]:
        """A (N, D), F = downsample(first-order maps) (N, d, h, w), 0 outside the image, and
        the extents of F (N, 2) (None: the whole map)."""
        a, f, ext = self._first_order(context, rois, valid)         # (N, D), (N, d, H-2, W-2)
        f, ext = masked_max_pool(f, ext, self.downsample)           # (N, d, h, w), (N, 2)
        return a, f, ext

    # ---- what ``acar bank --kind acfb`` needs of a trained acar ---------------------
    @staticmethod
    def _bank_pool(pool: str) -> nn.Module:
        if pool not in BANK_POOL_DOWNSAMPLE:
            raise ValueError(f"unknown bank pool '{pool}'; choose from {BANK_POOLS}")
        return DOWNSAMPLE[BANK_POOL_DOWNSAMPLE[pool]]()

    def bank_maps(self, context: Tensor, rois: Tensor, pool: str,
                  valid: Tensor | None = None) -> Tensor:
        """The first-order maps to bank for acfb, max-pooled by ``pool``: (N, d, h, w), 0
        outside the image of each actor's keyframe (``valid`` (B, 2) | None)."""
        _, f, ext = self._first_order(context, rois, valid)         # (N, d, H-2, W-2)
        return masked_max_pool(f, ext, self._bank_pool(pool))[0]    # (N, d, h, w)

    def bank_item_shape(self, height: int, width: int, pool: str) -> tuple[int, int, int]:
        """(d, h, w) of one banked map for an H x W context map (the 3x3 conv takes 2)."""
        probe = torch.zeros(1, 1, height - 2, width - 2)
        return (self.config.hidden_dim, *self._bank_pool(pool)(probe).shape[-2:])

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        a, f, ext = self.maps(context, rois, bank, valid)           # (N, D), (N, d, h, w)
        return [self.fc1(a).relu(), masked_spatial_mean(f, ext)]    # [(N, d), (N, d)]

    def relation_maps(self, context: Tensor, rois: Tensor, bank: Any = None,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A (N, D) and the high-order relation maps F (N, d, h, w) before pooling, 0
        outside the image."""
        return self.maps(context, rois, bank, valid)[:2]

    def maps(self, context: Tensor, rois: Tensor, bank: Any = None,
             valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """A (N, D), F (N, d, h, w) after HR2O and the extents of F (N, 2) (None: whole)."""
        a, f, ext = self._pooled_first_order(context, rois, valid)  # (N, D), (N, d, h, w)
        index, mask = group_actors(rois, len(context))              # (B, M), (B, M)
        return a, self.hr2o(f, index, mask, valid=ext), ext         # (N, d, h, w)

    @property
    def relation_weight(self) -> Tensor:
        """(K, d): the classifier weights that read AvgPool(F), so the class activation
        map of class k is ``sum_c relation_weight[k, c] * F[c]``."""
        return self.fc2.weight[:, -self.config.hidden_dim:]

    @property
    def relation_grid(self) -> tuple[float, float] | None:
        """(offset, step): cell i of F is centred on context cell ``offset + step * i`` (the
        3x3 conv has no padding, the max-pools keep centres); None: pooled to one cell."""
        if isinstance(self.downsample, nn.AdaptiveMaxPool2d):
            return None
        return 1.0, float(getattr(self.downsample, "stride", 1))
