"""``actor_actor``: first-order actor-actor relations (the "Actor-Actor" row of ACAR Table 1a).

Every actor attends to the actors of its own keyframe (itself included) with masked
multi-head scaled dot-product attention over the actor vectors, a post-norm transformer
layer without the feed-forward part::

    A       = actors(context, rois)                     (N, C)    RoIAlign 7x7 + max-pool
    x       = ReLU(Linear(A))                           (N, d)
    x       = LayerNorm(x + Dropout(Attn(x)))           (N, d)    within each keyframe
    logits  = Linear(Dropout([A; x]))                   (N, K)

Defaults: ``hidden_dim`` d = 512, ``num_heads`` = 8 (head size 64), ``dropout`` = 0.0
(before the classifier), ``attn_dropout`` = 0.0 (on the attention output), ``roi_size`` = 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .actor import group_actors
from .base import Head, HeadConfig
from .packing import masked_softmax, pack, unpack


@dataclass(frozen=True)
class ActorActorConfig(HeadConfig):
    head = "actor_actor"
    hidden_dim: int = 512       # d
    num_heads: int = 8          # attention heads; must divide hidden_dim
    dropout: float = 0.0        # before the classifier
    attn_dropout: float = 0.0   # on the attention output
    roi_size: int = 7           # RoIAlign output size

    def __post_init__(self) -> None:
        self.check_range("hidden_dim", 1)
        self.check_range("num_heads", 1)
        self.check(self.hidden_dim % self.num_heads == 0, "num_heads",
                   f"a divisor of hidden_dim {self.hidden_dim}")
        self.check_dropout("dropout", "attn_dropout")
        self.check_range("roi_size", 1)


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


class ActorActorHead(Head):
    Config = ActorActorConfig
    config: ActorActorConfig

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        cfg = self.config
        self.proj = nn.Linear(in_channels, cfg.hidden_dim)
        self.attn = ActorAttention(cfg.hidden_dim, cfg.num_heads)
        self.attn_dropout = nn.Dropout(cfg.attn_dropout)
        self.norm = nn.LayerNorm(cfg.hidden_dim)
        self.add_classifier(in_channels + cfg.hidden_dim, num_classes)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        a = self.actors(context, rois, valid)                  # (N, C), image cells only
        index, mask = group_actors(rois, len(context))         # (B, M), (B, M)
        x = pack(self.proj(a).relu(), index)                   # (B, M, d)
        x = self.norm(x + self.attn_dropout(self.attn(x, mask)))
        x = unpack(x, index, mask)                             # (N, d)
        return [a, x]                                          # [(N, C), (N, d)]
