"""``atr``: actor-target relations (Jiang et al., "Human Centric Spatio-Temporal Action
Localization", ActivityNet 2018): a non-local operation from each actor's RoI feature to
the context cells *outside* its box, so that a box can read the target of its action (the
object grabbed, the person hugged) beside it::

    A        = actors(context, rois)                         (N, C)   RoIAlign 7x7 + max
    q        = Linear(A)                                     (N, d)   the actor: query
    k, v     = Conv1x1(V), Conv1x1(V)                        (B, d, H, W)  keys, values
    k, v    += E_k[o_i], E_v[o_i]                            (N, d, H*W)   ``pos``: where
    scores  += b[o_i]     (a learned bias, starts at -|dx|-|dy|: near cells first)
               o_i = the cell's offset from box_i's centre, in cells, clipped to +-R
    allowed  = cell outside box_i and inside the image       (N, H*W)  bool
    w        = softmax_p(q . k[b_i, p] / sqrt(d)) on allowed (N, H*W)  0 elsewhere
    y        = sum_p w_p v[b_i, p]                           (N, d)   the context part
    logits   = Linear(Dropout(Norm([A; y])))                 (N, K)   fuse: concat
             = Linear(Dropout(Norm(A + Linear(y))))          (N, K)   fuse: add

``norm`` = batch: a BatchNorm1d before the classifier (:mod:`pipeline.models.base`); the
paper's RoI features pass through I3D's own (BN) layers after the fusion.

``num_heads`` = h > 1 splits q, k and v into h slices of d / h channels, each with its own
softmax over the allowed cells (and its own row of the offset bias): y is the h heads'
outputs side by side, (N, h, d / h) -> (N, d), so one head can read the target beside the
box while another reads something else (the arm that reaches for it).  h = 1 is the
single attention above, as in the paper.

The box mask comes from the RoI on the feature grid: cell (r, c) covers ``[c, c + 1) x
[r, r + 1)`` in feature pixels, and a cell that overlaps the box at all (positive area) is
inside, so no cell holding any of the actor's own pixels is a key.  With ``valid`` (B, 2)
the cells outside the image (padding) are masked too: each keyframe gets what it gets from
its map cropped to ``[:rows, :cols]``.  An actor whose box covers every image cell has no
context: y = 0.

``pos`` (off by default, as in the paper): a learned embedding of each cell's offset from
the box's centre (dx, dy rounded to whole cells, clipped to +-``reach``) is added to its
key and value, and a learned bias per offset to its score, which starts at minus the
offset's length in cells (a target beside the box first).  Without it the attention is
blind to where a cell lies, so a target beside the box and the same object across the
room look alike, and it starts spread over every cell of the scene.

Defaults: ``hidden_dim`` d = 512, ``fuse`` = concat, ``dropout`` = 0.0, ``roi_size`` = 7,
``pos`` = False, ``reach`` = 3, ``num_heads`` = 1, ``norm`` = none.
Like ACRN, ATR relates each actor to the scene only; actors do not see each other (another
person is context, outside the box).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import NORMS, Head, HeadConfig
from .masking import needed, valid_mask

FUSES = ("concat", "add")


@dataclass(frozen=True)
class ATRConfig(HeadConfig):
    head = "atr"
    hidden_dim: int = 512       # d, channels of the queries, keys and values
    fuse: str = "concat"        # concat: [A; y]; add: A + Linear(y)
    dropout: float = 0.0        # before the classifier
    roi_size: int = 7           # RoIAlign output size
    pos: bool = False           # add a learned embedding of the cell's offset from the box
    reach: int = 3              # ... offsets clipped to +-reach cells (a (2R+1)^2 table)
    num_heads: int = 1          # attention heads, each d / num_heads wide (1: the paper's)
    norm: str = "none"          # none | batch: BatchNorm1d on the classifier's input

    def __post_init__(self) -> None:
        self.check_range("hidden_dim", 1)
        self.check_choice("fuse", FUSES)
        self.check_dropout("dropout")
        self.check_range("roi_size", 1)
        self.check_range("reach", 1)
        self.check_range("num_heads", 1)
        self.check_choice("norm", NORMS)
        self.check(self.hidden_dim % self.num_heads == 0, "num_heads", "must divide hidden_dim")


def outside_boxes(rois: Tensor, height: int, width: int) -> Tensor:
    """(N, 5) rois in feature pixels -> (N, H, W) bool: True on the cells that do not
    overlap the actor's box (cell (r, c) is ``[c, c + 1) x [r, r + 1)``)."""
    cols = torch.arange(width, device=rois.device, dtype=rois.dtype)     # (W,)
    rows = torch.arange(height, device=rois.device, dtype=rois.dtype)    # (H,)
    x1, y1, x2, y2 = (rois[:, i, None] for i in range(1, 5))             # (N, 1) each
    in_x = (cols[None] < x2) & (cols[None] + 1 > x1)                     # (N, W)
    in_y = (rows[None] < y2) & (rows[None] + 1 > y1)                     # (N, H)
    return ~(in_y[:, :, None] & in_x[:, None, :])                        # (N, H, W)


def box_offsets(rois: Tensor, height: int, width: int, reach: int) -> Tensor:
    """(N, 5) rois in feature pixels -> (N, H*W) long: each cell's offset from the box's
    centre, (dy, dx) rounded to whole cells and clipped to +-reach, as one index into a
    (2 reach + 1)^2 table (row-major in dy, then dx; index of (0, 0) = 2 reach^2 + 2 reach)."""
    cols = torch.arange(width, device=rois.device, dtype=rois.dtype) + 0.5       # (W,)
    rows = torch.arange(height, device=rois.device, dtype=rois.dtype) + 0.5      # (H,)
    cx, cy = (rois[:, 1, None] + rois[:, 3, None]) / 2, (rois[:, 2, None] + rois[:, 4, None]) / 2
    dx = (cols[None] - cx).round().clamp(-reach, reach).long() + reach           # (N, W)
    dy = (rows[None] - cy).round().clamp(-reach, reach).long() + reach           # (N, H)
    return (dy[:, :, None] * (2 * reach + 1) + dx[:, None, :]).flatten(1)         # (N, HW)


class ATRHead(Head):
    Config = ATRConfig
    config: ATRConfig

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        d = self.config.hidden_dim
        self.query = nn.Linear(in_channels, d)
        self.key = nn.Conv2d(in_channels, d, 1)
        self.value = nn.Conv2d(in_channels, d, 1)
        cells = (2 * self.config.reach + 1) ** 2
        # the embeddings start at zero, the score bias at -|dy|-|dx| (cells near the box)
        self.pos_key = nn.Parameter(torch.zeros(cells, d)) if self.config.pos else None
        self.pos_value = nn.Parameter(torch.zeros(cells, d)) if self.config.pos else None
        r = torch.arange(-self.config.reach, self.config.reach + 1).abs()
        near = -(r[:, None] + r[None, :]).flatten().float()             # (cells,) -|dy|-|dx|
        if self.config.num_heads > 1:                                   # one table a head
            near = near.repeat(self.config.num_heads, 1)                # (h, cells)
        self.pos_bias = nn.Parameter(near) if self.config.pos else None
        add = self.config.fuse == "add"
        self.out = nn.Linear(d, in_channels) if add else None
        self.add_classifier(in_channels if add else in_channels + d, num_classes,
                            norm=self.config.norm)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        a, y = self.attend(context, rois, valid)                        # (N, C), (N, d)
        if self.out is not None:
            return [a + self.out(y)]                                    # [(N, C)]
        return [a, y]                                                   # [(N, C), (N, d)]

    def attend(self, context: Tensor, rois: Tensor,
               valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A (N, C) and the attended context y (N, d): the actor part and the context
        part that the classifier reads."""
        valid = needed(valid, context)                                  # (B, 2) | None
        a = self.actors(context, rois, valid)                           # (N, C)
        return a, self.context_part(self.query(a), context, rois, valid)

    def context_part(self, q: Tensor, context: Tensor, rois: Tensor,
                     valid: Tensor | None = None) -> Tensor:
        """Queries q (N, d) -> y (N, d), attending to the cells of each actor's keyframe
        outside its box and inside the image: what y reads of the map besides A."""
        B, C, H, W = context.shape
        valid = needed(valid, context)                                  # (B, 2) | None
        b = rois[:, 0].long()                                           # (N,)
        k = self.key(context).flatten(2)[b]                             # (N, d, HW)
        v = self.value(context).flatten(2)[b]                           # (N, d, HW)
        if self.pos_key is not None:                                    # where each cell is
            o = box_offsets(rois, H, W, self.config.reach)              # (N, HW)
            k = k + self.pos_key[o].transpose(1, 2)                     # (N, d, HW)
            v = v + self.pos_value[o].transpose(1, 2)                   # (N, d, HW)
        allowed = outside_boxes(rois, H, W)                             # (N, H, W)
        if valid is not None:
            allowed = allowed & valid_mask(valid, H, W)[b]              # (N, H, W)
        allowed = allowed.flatten(1)                                    # (N, HW)
        N, d, P = k.shape
        h, e = self.config.num_heads, d // self.config.num_heads
        # the heads ride in the batch: row n h + j is head j of actor n, which reads the
        # channels [j e, (j+1) e) of q, k and v (h = 1: the single attention's own sums)
        q, k, v = q.reshape(N * h, e), k.reshape(N * h, e, P), v.reshape(N * h, e, P)
        allowed = allowed.repeat_interleave(h, 0)                       # (N h, HW)
        scores = torch.einsum("nd,ndp->np", q, k) / e ** 0.5            # (N h, HW)
        if self.pos_bias is not None:
            if h == 1:
                scores = scores + self.pos_bias[o]                      # (N, HW)
            else:
                bias = self.pos_bias[:, o]                              # (h, N, HW)
                scores = scores + bias.transpose(0, 1).reshape(N * h, P)   # (N h, HW)
        some = allowed.any(1, keepdim=True)                             # (N h, 1)
        # -inf: exactly 0 weight (and gradient) on a masked cell; an actor with no cell
        # allowed gets uniform weights times 0 (finite, no NaN in the backward)
        scores = torch.where(allowed, scores, -torch.inf)
        scores = torch.where(some, scores, 0.0)
        w = scores.softmax(1) * some                                    # (N h, HW)
        return torch.einsum("np,ndp->nd", w, v).reshape(N, d)           # (N, d)
