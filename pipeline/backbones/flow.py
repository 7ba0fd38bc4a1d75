"""Farneback optical flow per cell: a non-learned motion "backbone" to fuse with another.

Jiang et al. (AVA 2018) fuse an RGB network with an optical-flow one, the flow given as
two channels (dx, dy) plus their product as a third.  Here the dense flow of OpenCV's
Farneback method (``cv2.calcOpticalFlowFarneback``) between each pair of consecutive
frames of the clip is pooled per 20x20-pixel cell, the grid of :mod:`.hoghof` (same
stride, same padding rules), so ``acar fuse --mode concat`` can join the two stores.
Trunk interface of :mod:`pipeline.backbones`::

    (B, 3, T, H, W) normalised with mean 0.5, std 0.5 (values in [-1, 1])
        -> (B, C=12, 1, H // 20, W // 20)

Channels, per cell, each the mean over the cell's pixels and the clip's T-1 frame pairs,
flows in pixels per frame pair divided by :data:`SCALE` (so O(1) on the toy world,
whose shapes move 0-4 px per frame, 2 frames apart):

======  ==========================================================================
0, 1    dx, dy (x to the right, y down: image coordinates)
2       dx * dy (the papers' third channel)
3       speed sqrt(dx^2 + dy^2)
4-11    speed-weighted histogram of the flow direction, 8 signed bins of 45 deg
        (linear binning between the two nearest bin centres; bin 0 = +x, bin 2 = +y)
======  ==========================================================================

The flow is computed at half resolution (2x2 average of the grey level; its pixels count
double), pooled over 10x10 half-resolution cells = the same 20x20 cells: 4x cheaper
(~0.1 s per 8x160x160 clip on 1 core, 7 pairs), as hoghof's motion channels are.
Farneback parameters: pyramid scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5,
poly_sigma 1.2 (OpenCV's documented example), on the grey level (mean of R, G, B) as
uint8.  No parameters, no randomness: a clip always gives the same map.

Padding: with ``image=(h, w)`` (extract passes it) the flow is computed on the image
alone and each cell pools only its pixels inside it; the cells outside are 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hoghof import CELL, cell_mean, masked_cell_mean, soft_histogram

HALF_CELL = CELL // 2    # the flow is computed at half resolution (2x2 average)
SCALE = 4.0          # px per frame pair -> feature units
DIR_BINS = 8
CHANNELS = 4 + DIR_BINS                                          # 12
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2,
                 flags=0)


def farneback(gray: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 frames -> (T-1, 2, H, W) float32 flow (dx, dy) of each pair."""
    import cv2

    out = np.empty((len(gray) - 1, 2, *gray.shape[1:]), np.float32)
    for t in range(len(gray) - 1):
        f = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **FARNEBACK)   # (H, W, 2)
        out[t] = f.transpose(2, 0, 1)
    return out


def flow_channels(flow: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) flow in px -> (N, 12, H, W) per-pixel channels (before pooling)."""
    dx, dy = flow[:, 0] / SCALE, flow[:, 1] / SCALE                   # (N, H, W)
    speed = torch.sqrt(dx * dx + dy * dy)
    direction = torch.atan2(dy, dx).remainder(2 * math.pi)
    hist = soft_histogram(direction, speed, DIR_BINS, 2 * math.pi)    # (N, 8, H, W)
    return torch.cat([torch.stack([dx, dy, dx * dy, speed], 1), hist], 1)


class FarnebackFlow(nn.Module):
    """(B, 3, T, H, W) in [-1, 1] -> (B, 12, 1, H // 20, W // 20); see the module docstring."""

    channels = CHANNELS
    stride = CELL

    def forward(self, x: torch.Tensor, image: tuple[int, int] | None = None) -> torch.Tensor:
        B, _, T, H, W = x.shape
        h, w = (H, W) if image is None else (int(v) for v in image)
        if not (0 < h <= H and 0 < w <= W):
            raise ValueError(f"image {h}x{w} does not fit the {H}x{W} input")
        gray = (x[..., :h, :w].float().mean(1) + 1) * 127.5             # (B, T, h, w)
        gray = F.avg_pool2d(gray, 2, ceil_mode=True)                    # (B, T, h/2, w/2)
        gray = gray.clamp(0, 255).round().to(torch.uint8).cpu().numpy()
        if T == 1:                                   # one frame: no motion, not an error
            gray = np.repeat(gray, 2, axis=1)
        pairs = gray.shape[1] - 1
        flow = torch.from_numpy(np.concatenate([farneback(g) for g in gray]))  # (B*(T-1), 2,..)
        per_pixel = flow_channels(2 * flow)                  # full-res px: (B*(T-1), 12, ., .)
        if (h, w) == (H, W) and H % 2 == 0 and W % 2 == 0:
            out = cell_mean(per_pixel, B, HALF_CELL)                     # (B, 12, H/20, W/20)
        else:
            rows, cols = math.ceil(h / CELL), math.ceil(w / CELL)
            inside = masked_cell_mean(per_pixel, B, HALF_CELL, rows, cols)   # (B, 12, rows, cols)
            out = inside.new_zeros(B, CHANNELS, H // CELL, W // CELL)
            out[..., :rows, :cols] = inside
        assert pairs >= 1
        return out.to(x.device).unsqueeze(2)                            # (B, 12, 1, h', w')
