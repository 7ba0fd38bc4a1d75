"""Actor features: RoIAlign on the context map, then spatial max-pooling.

Conventions shared by every head:

* ``context``: (B, C, H, W), the time-averaged backbone map of B keyframes ((B, C, T, H, W)
  with T time bins for the heads that read time: :func:`actor_maps_over_time`).
* ``rois``: (N, 5) float, rows ``[b, x1, y1, x2, y2]`` with ``b`` the keyframe index in
  the batch and the box in *feature-map pixels* (already divided by the feature stride).
  Actors of one keyframe are the rows with the same ``b``; relation heads attend across
  them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from .masking import replicate_edges


def actor_maps(context: Tensor, rois: Tensor, size: int = 7, aligned: bool = True) -> Tensor:
    """(B, C, H, W), (N, 5) -> (N, C, size, size) RoIAligned actor maps (``aligned``:
    torchvision's half-pixel offset; False is ACAR-Net's call, boxes at least 1 cell)."""
    return roi_align(context, rois.to(context.dtype), output_size=size, spatial_scale=1.0,
                     sampling_ratio=0, aligned=aligned)


def actor_vectors(context: Tensor, rois: Tensor, size: int = 7,
                  valid: Tensor | None = None, aligned: bool = True) -> Tensor:
    """(B, C, H, W), (N, 5) -> (N, C): RoIAlign then spatial max-pool (A_i in the papers).

    ``valid`` (B, 2) ``(rows, cols)`` | None: RoIAlign on the context with its cells
    outside the image replaced by the nearest image cell, which gives what RoIAlign gives
    on each keyframe's map cropped to ``[:rows, :cols]`` (see ``masking.replicate_edges``).
    """
    context = replicate_edges(context, valid)                        # (B, C, H, W)
    return actor_maps(context, rois, size, aligned).amax(dim=(2, 3))  # (N, C)


def actor_maps_over_time(context: Tensor, rois: Tensor, size: int = 7,
                         valid: Tensor | None = None, aligned: bool = True) -> Tensor:
    """(B, C, T, H, W) maps with T time bins, (N, 5) -> P (N, C, T, size, size): RoIAlign of
    each box on each bin, the box inflated over time (the same box on every bin).
    ``valid`` (B, 2) as in :func:`actor_vectors` (every bin of a keyframe shares it)."""
    B, C, T, H, W = context.shape
    flat = context.transpose(1, 2).reshape(B * T, C, H, W)           # (B*T, C, H, W)
    flat = replicate_edges(flat, None if valid is None else valid.repeat_interleave(T, 0))
    n = len(rois)
    r = rois[:, None, :].expand(n, T, 5).clone()                     # (N, T, 5)
    r[..., 0] = rois[:, None, 0] * T + torch.arange(T, device=rois.device, dtype=rois.dtype)
    maps = actor_maps(flat, r.reshape(n * T, 5), size, aligned)      # (N*T, C, s, s)
    return maps.view(n, T, C, size, size).transpose(1, 2)            # (N, C, T, s, s)


def group_actors(rois: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Pack actors per keyframe for attention.

    Returns ``index`` (B, M) long, positions into the N actors (padding points at 0),
    and ``mask`` (B, M) bool, True for real actors; M = max actors in one keyframe.
    """
    b = rois[:, 0].long()
    counts = torch.bincount(b, minlength=batch_size)
    m = int(counts.max().item()) if len(b) else 1
    order = torch.argsort(b, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(b), device=rois.device) - starts[b[order]]
    index = torch.zeros(batch_size, max(m, 1), dtype=torch.long, device=rois.device)
    mask = torch.zeros(batch_size, max(m, 1), dtype=torch.bool, device=rois.device)
    index[b[order], slot] = order
    mask[b[order], slot] = True
    return index, mask
