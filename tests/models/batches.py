"""Tiny synthetic batches shared by the head tests: context maps, rois and banks."""

from __future__ import annotations

import torch

C, H, W, K = 16, 8, 8, 5   # in_channels, context map height and width, classes


def make_batch(counts=(1, 2, 4), seed: int = 0, time: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Context (B, C, H, W) (``time``: (B, C, time, H, W), for the heads that read time) and
    shuffled rois (N, 5) with ``counts[b]`` actors in keyframe b.  Row 0 belongs to the
    largest keyframe, so the padded slots of the smaller keyframes (which copy row 0) hold a
    foreign actor."""
    g = torch.Generator().manual_seed(seed)
    bins = () if time is None else (time,)
    context = torch.randn(len(counts), C, *bins, H, W, generator=g)
    rows = []
    for b, n in enumerate(counts):
        xy1 = torch.rand(n, 2, generator=g) * (W / 2)
        wh = 1 + torch.rand(n, 2, generator=g) * (W / 2 - 1)
        rows.append(torch.cat([torch.full((n, 1), float(b)), xy1, xy1 + wh], dim=1))
    rois = torch.cat(rows)[torch.randperm(sum(counts), generator=g)]
    if len(rois):
        largest = max(range(len(counts)), key=counts.__getitem__)
        first = int((rois[:, 0] == largest).nonzero()[0])
        rois[[0, first]] = rois[[first, 0]]
    return context, rois


def make_bank(slots=(0, 4, 2), item: tuple[int, ...] = (C,),
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bank (slots (B, S, *item), mask (B, S)) with ``slots[b]`` real slots first in row
    b; the padding holds large garbage (it must never be seen)."""
    g = torch.Generator().manual_seed(seed + 1000)
    mem = torch.randn(len(slots), max(max(slots), 1), *item, generator=g)
    mask = torch.zeros(len(slots), mem.shape[1], dtype=torch.bool)
    for b, s in enumerate(slots):
        mask[b, :s] = True
    mem[~mask] = 1e4
    return mem, mask


def rows_of(rois: torch.Tensor, b: int) -> torch.Tensor:
    """The rows of ``rois`` in keyframe b."""
    return (rois[:, 0] == b).nonzero()[:, 0]


def alone(context: torch.Tensor, rois: torch.Tensor, b: int):
    """The keyframe b as a batch of its own: (1, C, H, W), its rois with b = 0, and its rows."""
    rows = rows_of(rois, b)
    sub = rois[rows].clone()
    sub[:, 0] = 0
    return context[b:b + 1], sub, rows
