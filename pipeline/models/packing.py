"""Per-keyframe packing for relation heads (pack, unpack, masked softmax and mean).

Relation heads let an actor look only at the actors of its own keyframe.  We pack the
N actors into a padded (B, M, ...) tensor with :func:`pipeline.models.actor.group_actors`,
compute with a (B, M) mask, and unpack back to (N, ...) in the order of ``rois``.

Padded slots hold copies of actor 0 (finite values).  They must never receive attention
weight: :func:`masked_softmax` fills them with the most negative finite float, so their
weight underflows to exactly 0, and :func:`masked_mean` multiplies them by 0.  A keyframe
with no actors gives an all-masked row; it stays finite (uniform weights) and is dropped
by :func:`unpack`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pack(x: Tensor, index: Tensor) -> Tensor:
    """(N, ...), index (B, M) -> (B, M, ...); padded slots are copies of row 0."""
    if len(x) == 0:  # no actors at all: nothing to gather from
        return x.new_zeros(*index.shape, *x.shape[1:])
    return x[index]


def unpack(y: Tensor, index: Tensor, mask: Tensor) -> Tensor:
    """(B, M, ...) -> (N, ...), rows back in ``rois`` order; padded slots are dropped."""
    n = int(mask.sum())
    out = y.new_empty(n, *y.shape[2:])
    out[index[mask]] = y[mask]  # index[mask] is a permutation of 0..N-1
    return out


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` where ``mask`` (broadcastable, True = keep) is False -> weight 0."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean over ``dim`` of the entries where ``mask`` (broadcastable, float or bool) is True."""
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)
