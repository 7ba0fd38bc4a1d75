"""HOG/HOF: a classical, non-learned spatio-temporal descriptor used as a video "backbone".

No pretrained weights can be downloaded here and a randomly initialised 3D CNN costs ~1.6 s
per clip on two CPU cores (its features probed no better), so the CPU demo on the synthetic world
describes each 20x20-pixel cell of a clip by hand-made statistics instead (Dalal & Triggs'
HOG, Laptev's HOF, colour).  It is a plain ``nn.Module`` with the trunk interface of
:mod:`pipeline.backbones`::

    (B, 3, T, H, W) normalised with mean 0.5, std 0.5 (values in [-1, 1])
        -> (B, C=30, 1, H // 20, W // 20)

Channels, per cell (all pooled over the cell's pixels and the clip's T frames / T-1 pairs):

======  ==========================================================================
0-8     HOG: unsigned gradient orientation (9 bins of 20 deg, soft/linear binning,
        magnitude-weighted), per frame; sqrt of the histogram / its sum ("Hellinger")
9       gradient energy: sqrt(mean |grad I|)
10-17   HOF: direction of the normal flow -I_t grad I / (|grad I|^2 + eps) between
        consecutive frames (8 signed bins of 45 deg, weighted by its speed, capped)
18      HOF "no motion" bin: textured pixels whose normal flow is below 0.5 px
        (bins 10-18 are normalised together like the HOG block)
19      motion speed: sqrt(mean capped normal-flow speed)
20      temporal-difference energy: sqrt(mean |I_t - I_t-1|)
21-23   colour: mean R, G, B of the cell (in [-1, 1])
24-26   colour: standard deviation of R, G, B within the cell
27-29   colour: mean R, G, B of the 3x3 cells around (the object's surroundings)
======  ==========================================================================

I is the grey level (mean of R, G, B).  The motion channels are computed at half
resolution (2x2 average), where an edge moving a few pixels per sampled frame still
overlaps itself, and pooled over 10x10 half-resolution cells = the same 20x20 cells.
A histogram block is ``sqrt(h / (sum h + eps))``: a distribution when the cell has
structure, ~0 when it is flat (eps keeps noise from being blown up).  Everything is
multiplied by :data:`GAIN` = 4, which gives the output a standard deviation of ~0.8
(measured: 0.77) on synthetic moving-shape clips (8 x 160 x 160, three coloured
rectangles moving 0-4 px per frame over a grey noisy background) and ~1.1 on clips of
the synth stage's toy world, so heads trained with SGD at lr 0.02-0.1 see O(1) features.

Cost: ~0.03 s (measured 27 ms) per 8-frame 160x160 clip, batch 8, one CPU thread
(``torch.set_num_threads(1)``); the output stride is the cell size (20); T' = 1 (extract
averages over time anyway).  No parameters, no randomness: a clip always gives the
same map.

Padding: told the image's size in a padded input (``image=(h, w)``, which extract
passes), the descriptor sees only the image, so its cells inside the image are the same
whatever the padding (a 16:9 frame in a square canvas); a square unpadded input takes
the plain path, unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CELL = 20            # pixels per cell side = the output stride
HOG_BINS = 9         # unsigned orientations over [0, pi)
HOF_BINS = 8         # signed directions over [0, 2 pi)
FLOW_EPS = 0.01      # regularises the normal flow where the gradient is weak
FLOW_CAP = 4.0       # half-res pixels per frame pair: larger speeds count as this
STATIC_SPEED = 0.5   # below this (half-res px / pair) a textured pixel counts as static
HIST_EPS = 1e-2      # a histogram block with less mass than this fades to 0
GAIN = 4.0           # output std ~0.8 on moving-shape clips (see the module docstring)
CHANNELS = HOG_BINS + 1 + HOF_BINS + 1 + 1 + 1 + 3 + 3 + 3    # 30


def gradients(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of (N, H, W) images, edges replicated: (gx, gy), each (N, H, W)."""
    p = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]     # (N, H+2, W+2)
    gx = (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) / 2
    gy = (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) / 2
    return gx, gy


def soft_histogram(angle: torch.Tensor, weight: torch.Tensor, bins: int, period: float
                   ) -> torch.Tensor:
    """Linear (triangle) binning of angles on a circle of ``period``.

    angle, weight: (N, H, W) -> (N, bins, H, W); a pixel splits its weight between the
    two nearest bin centres (0, period/bins, ...), so the histogram is smooth in the angle.
    """
    pos = (angle * (bins / period)).unsqueeze(1)                          # (N, 1, H, W)
    lo = pos.floor()
    hist = torch.zeros(pos.shape[0], bins, *pos.shape[2:], dtype=angle.dtype,
                       device=angle.device)                              # (N, bins, H, W)
    # only the two centres c around pos get weight (any other is >= 1 away); each one's is
    # computed as the circular distance of pos to that centre, (pos - c) mod bins
    for c in (lo.remainder(bins), (lo + 1).remainder(bins)):             # (N, 1, H, W)
        d = (pos - c).remainder(bins)
        d = torch.minimum(d, bins - d)                                   # circular distance
        hist.scatter_add_(1, c.long(), weight.unsqueeze(1) * (1 - d).clamp_(min=0))
    return hist


def cell_mean(x: torch.Tensor, b: int, cell: int) -> torch.Tensor:
    """(b * T, K, H, W) -> (b, K, H // cell, W // cell): mean over each cell and over T."""
    x = F.avg_pool2d(x, cell)                                            # (b*T, K, h, w)
    return x.view(b, -1, *x.shape[1:]).mean(1)


def hellinger(hist: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) non-negative histograms -> sqrt(h / (sum h + eps)) per cell."""
    return (hist / (hist.sum(1, keepdim=True) + HIST_EPS)).sqrt()


def masked_cell_mean(x: torch.Tensor, b: int, cell: int, rows: int, cols: int
                     ) -> torch.Tensor:
    """(b * T, K, h, w) -> (b, K, rows, cols): mean over each cell's pixels inside the
    (h, w) image (the last row and column of cells may be partial) and over T."""
    hh, ww = rows * cell - x.shape[-2], cols * cell - x.shape[-1]
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.device)
    total = F.avg_pool2d(F.pad(x, (0, ww, 0, hh)), cell)                 # (b*T, K, r, c)
    share = F.avg_pool2d(F.pad(ones, (0, ww, 0, hh)), cell)              # image share
    x = total / share
    return x.view(b, -1, *x.shape[1:]).mean(1)


class HogHof(nn.Module):
    """(B, 3, T, H, W) in [-1, 1] -> (B, 30, 1, H // 20, W // 20); see the module docstring.

    ``image=(h, w)``: the image's size at the top-left of a zero-padded input.  The
    descriptor then sees only the image: gradients and motion replicate its edges as
    they do the input's, each cell pools only its pixels inside the image, the
    surroundings only the cells inside it, and the cells outside it are 0.  The
    features inside the image are then the same whatever the padding.  Without
    ``image`` (or with the input's own size) the whole input is the image.
    """

    channels = CHANNELS
    stride = CELL

    def forward(self, x: torch.Tensor, image: tuple[int, int] | None = None) -> torch.Tensor:
        B, _, T, H, W = x.shape
        x = x.float()
        if T == 1:                                   # one frame: no motion, not an error
            x = x.expand(B, 3, 2, H, W)
        if image is None or tuple(image) == (H, W):
            return (GAIN * _describe(x, cell_mean)).unsqueeze(2)         # (B, 30, 1, h, w)
        h, w = (int(v) for v in image)
        rows, cols = math.ceil(h / CELL), math.ceil(w / CELL)
        if not (0 < h <= H and 0 < w <= W):
            raise ValueError(f"image {h}x{w} does not fit the {H}x{W} input")

        def pool(v: torch.Tensor, b: int, cell: int) -> torch.Tensor:
            return masked_cell_mean(v, b, cell, rows, cols)

        inside = _describe(x[..., :h, :w], pool, half_ceil=True)        # (B, 30, rows, cols)
        out = inside.new_zeros(B, CHANNELS, H // CELL, W // CELL)
        out[..., :rows, :cols] = inside
        return (GAIN * out).unsqueeze(2)                                 # (B, 30, 1, h, w)


def _describe(x: torch.Tensor, pool, half_ceil: bool = False) -> torch.Tensor:
    """(B, 3, T >= 2, H, W) -> (B, 30, h, w) before the gain; ``pool(maps, B, cell)`` pools
    (B*T, K, H, W) pixel maps into cells and over T (``half_ceil``: the half-resolution
    image keeps a last odd row or column)."""
    B, _, T, H, W = x.shape
    rgb = x.transpose(1, 2).reshape(B * T, 3, H, W)                      # (B*T, 3, H, W)
    gray = rgb.mean(1)                                                   # (B*T, H, W)

    # HOG: orientation histograms of every frame, averaged over the clip
    gx, gy = gradients(gray)                                             # (B*T, H, W) x2
    mag = torch.sqrt(gx * gx + gy * gy)
    theta = torch.atan2(gy, gx).remainder(math.pi)                       # unsigned [0, pi)
    hog = pool(soft_histogram(theta, mag, HOG_BINS, math.pi), B, CELL)   # (B, 9, h, w)
    grad_energy = pool(mag[:, None], B, CELL)                            # (B, 1, h, w)

    # HOF: normal flow between consecutive frames, at half resolution
    half = F.avg_pool2d(gray[:, None], 2, ceil_mode=half_ceil)[:, 0]     # (B*T, H/2, W/2)
    half = half.view(B, T, *half.shape[1:])
    a, b = half[:, :-1], half[:, 1:]                                     # (B, T-1, H/2, W/2)
    it = (b - a).flatten(0, 1)                                           # (B*(T-1), H/2, W/2)
    fx, fy = gradients(((a + b) / 2).flatten(0, 1))
    den = fx * fx + fy * fy + FLOW_EPS
    vx, vy = -it * fx / den, -it * fy / den                              # normal flow (px)
    speed = torch.sqrt(vx * vx + vy * vy).clamp_(max=FLOW_CAP)
    direction = torch.atan2(vy, vx).remainder(2 * math.pi)               # signed [0, 2 pi)
    moving = soft_histogram(direction, speed, HOF_BINS, 2 * math.pi)     # (N, 8, .., ..)
    static = torch.sqrt(den - FLOW_EPS) * (1 - speed / STATIC_SPEED).clamp_(min=0)
    hof = torch.cat([moving, static[:, None]], 1)                        # (N, 9, H/2, W/2)
    hof = pool(hof, B, CELL // 2)                                        # (B, 9, h, w)
    motion = pool(torch.stack([speed, it.abs()], 1), B, CELL // 2)       # (B, 2, h, w)

    # colour: the cell's mean and spread, and its surroundings' mean
    mean = pool(rgb, B, CELL)                                            # (B, 3, h, w)
    sq = pool(rgb * rgb, B, CELL)
    std = (sq - mean * mean).clamp_(min=0).sqrt()                        # (B, 3, h, w)
    around = F.avg_pool2d(mean, 3, stride=1, padding=1, count_include_pad=False)

    return torch.cat([hellinger(hog), grad_energy.sqrt(), hellinger(hof), motion.sqrt(),
                      mean, std, around], 1)                             # (B, 30, h, w)
