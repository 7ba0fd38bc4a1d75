"""``actor_actor``: first-order actor-actor relations (the "Actor-Actor" row of ACAR Table 1a).

Every actor attends to the actors of its own keyframe (itself included) with masked
multi-head scaled dot-product attention over the actor vectors, a post-norm transformer
layer without the feed-forward part::

    A       = actor_vectors(context, rois)              (N, C)    RoIAlign 7x7 + max-pool
    x       = ReLU(Linear(A))                           (N, d)
    x       = LayerNorm(x + Dropout(Attn(x)))           (N, d)    within each keyframe
    logits  = Linear(Dropout([A; x]))                   (N, K)

Defaults: ``hidden_dim`` d = 512, ``num_heads`` = 8 (head size 64), ``dropout`` = 0.0
(before the classifier), ``attn_dropout`` = 0.0 (on the attention output), ``roi_size`` = 7.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .actor import actor_vectors, group_actors
from .base import BankRequest
from .keyframes import masked_softmax, pack, unpack


class ActorAttention(nn.Module):
    """Masked multi-head self-attention over the actors of each keyframe."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, M, d), mask (B, M) True for real actors -> (B, M, d)."""
        B, M, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(B, M, 3, h, d // h).unbind(2)  # 3 x (B, M, h, d/h)
        scores = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)) / (d // h) ** 0.5  # (B, h, M, M)
        att = masked_softmax(scores, mask[:, None, None, :], dim=-1)  # over keys j
        y = att @ v.transpose(1, 2)                                    # (B, h, M, d/h)
        return self.out(y.transpose(1, 2).reshape(B, M, d))            # (B, M, d)


class ActorActorHead(nn.Module):
    bank_request: BankRequest | None = None   # reads no bank
    def __init__(self, in_channels: int, num_classes: int, hidden_dim: int = 512,
                 num_heads: int = 8, dropout: float = 0.0, attn_dropout: float = 0.0,
                 roi_size: int = 7):
        super().__init__()
        self.roi_size = roi_size
        self.proj = nn.Linear(in_channels, hidden_dim)
        self.attn = ActorAttention(hidden_dim, num_heads)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.norm = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels + hidden_dim, num_classes)

    def forward(self, context: Tensor, rois: Tensor, bank=None,
                valid: Tensor | None = None) -> Tensor:
        a = actor_vectors(context, rois, self.roi_size)        # (N, C)
        index, mask = group_actors(rois, len(context))         # (B, M), (B, M)
        x = pack(self.proj(a).relu(), index)                   # (B, M, d)
        x = self.norm(x + self.attn_dropout(self.attn(x, mask)))
        x = unpack(x, index, mask)                             # (N, d)
        return self.fc(self.dropout(torch.cat([a, x], dim=1)))  # (N, K)
