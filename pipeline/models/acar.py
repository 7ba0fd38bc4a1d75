"""``acar``: Actor-Context-Actor Relation Network head (Pan et al., CVPR 2021).

Shapes for B keyframes, N actors, C = ``in_channels``, D = ``reduce_dim``,
d = ``hidden_dim``, K classes::

    V       = Conv1x1(context)                            (B, D, H, W)     no bias
    A       = actor_vectors(V, rois)                      (N, D)           RoIAlign 7x7 + max
    F       = ReLU(Conv1x1([V_{b_i}; tile(A_i)]))         (N, d, H, W)     no bias
    F       = ReLU(Conv3x3(F))                            (N, d, H-2, W-2) no bias, no padding
    F       = downsample(F)                               (N, d, h, w)
    F       = HR2O(F), within each keyframe               (N, d, h, w)     see ``hr2o.py``
    logits  = Linear(Dropout([ReLU(Linear(A)); AvgPool(F)]))  (N, K)       Linear(A): D -> d

Defaults (those of the official code, ``Siyu-C/ACAR-Net``, ``models/heads/acar.py``):
``reduce_dim`` = 1024, ``hidden_dim`` = 512, ``downsample`` = "max2x2", ``hr2o`` = "nl",
``depth`` = 2 (1..3), ``kernel_size`` = 3 (Q/K/V and output convs of the HR2O blocks),
``hr2o_dropout`` = 0.2 (inside the blocks), ``dropout`` = 0.0 (before the classifier),
``bias`` = False (classifier bias), ``roi_size`` = 7.

``downsample``: "max2x2" = MaxPool(3, stride 2, pad 1) (h = ceil((H-2)/2)), "max4x4" =
MaxPool(5, stride 4, pad 2) (h = ceil((H-2)/4)), "global" = global max-pool (h = 1),
"none".  The context map must be at least 3x3 (the 3x3 conv has no padding).

The 1x1 conv over [V; tile(A_i)] is linear, so it is computed as
``Conv1x1(V)[b_i] + Linear(A_i)`` broadcast over the map: the same result without
materialising the (N, 2D, H, W) tile.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .actor import actor_vectors, group_actors
from .base import BANK_POOLS, BankRequest
from .hr2o import HR2O

DOWNSAMPLE = {
    "none": lambda: nn.Identity(),
    "max2x2": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "max4x4": lambda: nn.MaxPool2d(5, stride=4, padding=2),
    "global": lambda: nn.AdaptiveMaxPool2d(1),
}
BANK_POOL_DOWNSAMPLE = dict(zip(BANK_POOLS, ("none", "max2x2", "max4x4"), strict=True))


class ACARHead(nn.Module):
    bank_request: BankRequest | None = None   # reads no bank
    def __init__(self, in_channels: int, num_classes: int, reduce_dim: int = 1024,
                 hidden_dim: int = 512, downsample: str = "max2x2", hr2o: str = "nl",
                 depth: int = 2, kernel_size: int = 3, hr2o_dropout: float = 0.2,
                 dropout: float = 0.0, bias: bool = False, roi_size: int = 7):
        super().__init__()
        if downsample not in DOWNSAMPLE:
            raise ValueError(f"unknown downsample '{downsample}'; choose from {sorted(DOWNSAMPLE)}")
        if not 1 <= depth <= 3:
            raise ValueError(f"depth must be 1, 2 or 3, got {depth}")
        self.roi_size = roi_size
        self.reduce = nn.Conv2d(in_channels, reduce_dim, 1, bias=False)
        # first-order actor-context relations; conv1 over [V; A_i] split by input group
        self.conv1_context = nn.Conv2d(reduce_dim, hidden_dim, 1, bias=False)
        self.conv1_actor = nn.Linear(reduce_dim, hidden_dim, bias=False)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, bias=False)
        self.downsample = DOWNSAMPLE[downsample]()
        self.hr2o = HR2O(hr2o, hidden_dim, depth, kernel_size, hr2o_dropout)
        self.fc1 = nn.Linear(reduce_dim, hidden_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(2 * hidden_dim, num_classes, bias=bias)

    def first_order(self, context: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """The first-order part: A (N, D) and the actor-context maps F (N, d, H-2, W-2),
        before ``downsample`` (what ``acar bank --kind acfb`` stores, after its own pool)."""
        b = rois[:, 0].long()                                       # (N,)
        v = self.reduce(context)                                    # (B, D, H, W)
        a = actor_vectors(v, rois, self.roi_size)                   # (N, D)
        f = self.conv1_context(v)[b] + self.conv1_actor(a)[:, :, None, None]  # (N, d, H, W)
        return a, self.conv2(f.relu()).relu()                       # (N, D), (N, d, H-2, W-2)

    # ---- what ``acar bank --kind acfb`` needs of a trained acar ---------------------
    @staticmethod
    def _bank_pool(pool: str) -> nn.Module:
        if pool not in BANK_POOL_DOWNSAMPLE:
            raise ValueError(f"unknown bank pool '{pool}'; choose from {BANK_POOLS}")
        return DOWNSAMPLE[BANK_POOL_DOWNSAMPLE[pool]]()

    def bank_maps(self, context: Tensor, rois: Tensor, pool: str,
                  valid: Tensor | None = None) -> Tensor:
        """The first-order maps to bank for acfb, max-pooled by ``pool``: (N, d, h, w)."""
        return self._bank_pool(pool)(self.first_order(context, rois)[1])

    def bank_item_shape(self, height: int, width: int, pool: str) -> tuple[int, int, int]:
        """(d, h, w) of one banked map for an H x W context map (the 3x3 conv takes 2)."""
        probe = torch.zeros(1, 1, height - 2, width - 2)
        return (self.conv2.out_channels, *self._bank_pool(pool)(probe).shape[-2:])

    def forward(self, context: Tensor, rois: Tensor, bank=None,
                valid: Tensor | None = None) -> Tensor:
        a, f = self.relation_maps(context, rois, bank)              # (N, D), (N, d, h, w)
        x = torch.cat([self.fc1(a).relu(), f.mean(dim=(2, 3))], 1)  # (N, 2d)
        return self.fc2(self.dropout(x))                            # (N, K)

    def relation_maps(self, context: Tensor, rois: Tensor, bank=None,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A (N, D) and the high-order relation maps F (N, d, h, w) before pooling."""
        a, f = self.first_order(context, rois)                      # (N, D), (N, d, H-2, W-2)
        f = self.downsample(f)                                      # (N, d, h, w)
        index, mask = group_actors(rois, len(context))              # (B, M), (B, M)
        return a, self.hr2o(f, index, mask)                         # (N, d, h, w)

    @property
    def relation_weight(self) -> Tensor:
        """(K, d): the classifier weights that read AvgPool(F), so the class activation
        map of class k is ``sum_c relation_weight[k, c] * F[c]``."""
        return self.fc2.weight[:, self.fc1.out_features:]

    @property
    def relation_grid(self) -> tuple[float, float] | None:
        """(offset, step): cell i of F is centred on context cell ``offset + step * i`` (the
        3x3 conv has no padding, the max-pools keep centres); None: pooled to one cell."""
        if isinstance(self.downsample, nn.AdaptiveMaxPool2d):
            return None
        return 1.0, float(getattr(self.downsample, "stride", 1))
