"""What ``s_only`` and ``t_only`` share (Feng et al. 2021, "Relation Modeling in
Spatio-Temporal Action Localization"): person features that keep time, token sequences of
the persons of one keyframe at each position, one transformer encoder shared by every
position, the outputs averaged over positions, a linear classifier.

For B keyframes, N persons, M = the most persons in one keyframe, P positions (S-only:
the 7 x 7 RoI cells; T-only: the T time bins), d = ``width``::

    P^i     = RoIAlign of box i on each time bin             (N, C, T, 7, 7)  per bin
    tokens  = the head's aggregation of P^i at each position  (N, P, C)        ``tokens``
    x       = Linear(tokens) + pos                            (N, P, d)
    x       = pack per keyframe, positions as sequences       (B*P, M, d)      mask (B*P, M)
    depth x   x = x + Attn(LN(x));  x = x + MLP(LN(x))        (B*P, M, d)      pre-norm
    x       = LN(x), unpack, mean over the P positions        (N, d)
    logits  = Linear(Dropout(x))                              (N, K)

With a memory (``t_only`` with ``window``: the ``memory`` bank, pooled person features of
the keyframes within ±window s, (B, S, d) slots with a (B, S) mask), each sequence is the
keyframe's persons followed by its S memory tokens ``Linear(slot)`` (the same at every
position, no position encoding): (B*P, M + S, d), the memory's outputs dropped.  An empty
memory (S = 0) is no memory, bitwise.

``pos`` (``pos: true``) is a fixed sinusoidal encoding of each position (the time bin, or
the cell's row and column), so that the shared encoder can tell positions apart; the issue's
account of the paper does not say whether it has one (``pos: false`` leaves it out).
Attention is over the persons of one keyframe at one position, with the padding masks of
:mod:`pipeline.models.packing`; the encoder never mixes positions or keyframes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .actor import actor_maps_over_time, group_actors
from .actor_actor import ActorAttention
from .base import Head, HeadConfig, bank_slots
from .masking import needed
from .packing import pack, unpack

AGGS = ("avg", "max")


@dataclass(frozen=True)
class SequenceConfig(HeadConfig):
    depth: int = 1              # encoder blocks (shared by every position)
    num_heads: int = 4          # attention heads; must divide width
    width: int = 256            # d, the tokens' width
    agg: str = "avg"            # avg | max: how P^i is pooled into a token
    mlp_ratio: int = 4          # the MLP's hidden width is mlp_ratio x d
    pos: bool = True            # add a sinusoidal encoding of the position to the tokens
    attn_dropout: float = 0.0   # on each block's attention and MLP outputs
    dropout: float = 0.0        # before the classifier
    roi_size: int = 7           # RoIAlign output size

    def __post_init__(self) -> None:
        self.check_range("depth", 1)
        self.check_range("num_heads", 1)
        self.check_range("width", 2)
        self.check(self.width % self.num_heads == 0, "num_heads",
                   f"a divisor of width {self.width}")
        self.check_choice("agg", AGGS)
        self.check_range("mlp_ratio", 1)
        self.check(isinstance(self.pos, bool), "pos", "true or false")
        self.check_dropout("dropout", "attn_dropout")
        self.check_range("roi_size", 1)


class Block(nn.Module):
    """Pre-norm transformer encoder block over the persons of a sequence (masked)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = ActorAttention(width, num_heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (L, M, d), mask (L, M) True for real persons -> (L, M, d)."""
        x = x + self.drop(self.attn(self.ln1(x), mask))
        return x + self.drop(self.mlp(self.ln2(x)))


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """(P,) positions -> (P, dim): sin and cos at geometric frequencies (Vaswani et al.)."""
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angle = positions.float()[:, None] * freq[None]                  # (P, half)
    return torch.cat([angle.sin(), angle.cos()], 1)[:, :dim]         # (P, dim)


def aggregate(x: Tensor, dims: tuple[int, ...], agg: str) -> Tensor:
    """The mean (``avg``) or the max of ``x`` over ``dims``."""
    return x.mean(dim=dims) if agg == "avg" else x.amax(dim=dims)


class SequenceHead(Head):
    """The shared part of ``s_only`` and ``t_only``: a subclass gives ``tokens`` (the
    person's token at each position) and ``positions`` (their sinusoidal encoding)."""

    config: SequenceConfig
    temporal = True

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        cfg = self.config
        self.proj = nn.Linear(in_channels, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.num_heads, cfg.mlp_ratio,
                                          cfg.attn_dropout) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.add_memory()
        self.add_classifier(cfg.width, num_classes)

    def add_memory(self) -> None:
        """A head with a memory sets ``bank_request`` and ``mem_proj`` here."""

    def tokens(self, p: Tensor) -> Tensor:
        """P (N, C, T, s, s) -> tokens (N, P, C), one per position."""
        raise NotImplementedError

    def positions(self, p: Tensor) -> Tensor:
        """(P, d) encoding of the positions of ``tokens(p)``."""
        raise NotImplementedError

    def person_maps(self, context: Tensor, rois: Tensor, valid: Tensor | None) -> Tensor:
        """(B, C, T, H, W), (N, 5) -> P (N, C, T, s, s), the image's cells only."""
        if context.ndim != 5:
            raise ValueError(f"head '{self.config.head}' reads maps with time bins (B, C, T, "
                             f"H, W), got {tuple(context.shape)}: extract the features with "
                             "extract.temporal: N")
        valid = needed(valid, context)
        return actor_maps_over_time(context, rois, self.config.roi_size, valid,
                                    self.config.roi_aligned)          # (N, C, T, s, s)

    def encode(self, x: Tensor, rois: Tensor, batch_size: int,
               memory: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (N, P, d) -> (N, P, d): the blocks over the persons of each keyframe at each
        position, followed by the keyframe's memory tokens (B, S, d) (mask (B, S)) if any."""
        n, npos, d = x.shape
        index, mask = group_actors(rois, batch_size)                  # (B, M), (B, M)
        seq = pack(x, index)                                          # (B, M, P, d)
        m = seq.shape[1]
        seq = seq.permute(0, 2, 1, 3)                                 # (B, P, M, d)
        smask = mask[:, None, :].expand(batch_size, npos, m)          # (B, P, M)
        if memory is not None and memory[0].shape[1] > 0:
            mem, mem_mask = memory                                    # (B, S, d), (B, S)
            seq = torch.cat([seq, mem[:, None].expand(-1, npos, -1, -1)], 2)   # (B, P, M+S, d)
            smask = torch.cat([smask, mem_mask[:, None].expand(-1, npos, -1)], 2)
        length = seq.shape[2]
        seq, smask = seq.reshape(-1, length, d), smask.reshape(-1, length)   # (B*P, M+S, ..)
        for block in self.blocks:
            seq = block(seq, smask)
        seq = self.ln_f(seq[:, :m]).view(batch_size, npos, m, d).transpose(1, 2)  # (B, M, P, d)
        return unpack(seq, index, mask)                               # (N, P, d)

    def memory(self, bank: Any, like: Tensor, batch_size: int) -> tuple[Tensor, Tensor] | None:
        """The memory tokens (B, S, d) and mask (B, S) of ``bank``; None: no memory."""
        if self.bank_request is None:
            return None
        times = None
        if self.bank_request.times and bank is not None:             # (slots, mask, times)
            if len(bank) != 3:
                raise ValueError(f"a memory with mem_time reads (slots, mask, times), got "
                                 f"{len(bank)} bank tensors")
            bank, times = bank[:2], bank[2]                           # times (B, S) seconds
        slots, mask = bank_slots(bank, (self.bank_request.dim,), batch_size, like,
                                 "memory vectors (d,)")
        tokens = self.mem_proj(slots)                                 # (B, S, d)
        if times is not None:
            w = self.bank_request.window
            tokens = tokens + self.mem_time_embed[(times.long() + w).clamp(0, 2 * w)]
        return tokens, mask                                           # (B, S, d), (B, S)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        p = self.person_maps(context, rois, valid)                    # (N, C, T, s, s)
        x = self.proj(self.tokens(p))                                 # (N, P, d)
        if self.config.pos:
            x = x + self.positions(p).to(x)[None]                     # (N, P, d)
        memory = self.memory(bank, x, len(context))
        return [self.encode(x, rois, len(context), memory).mean(dim=1)]  # [(N, d)]
