"""Heads, selected by name.  Every head has the signature::

    Head(in_channels: int, num_classes: int, **hparams)
    head(context: (B, C, H, W), rois: (N, 5), bank=None) -> logits (N, num_classes)

See :mod:`pipeline.models.actor` for the ``rois`` convention.
"""

from __future__ import annotations

from torch import nn

from .acar import ACARHead
from .acrn import ACRNHead
from .actor_actor import ActorActorHead
from .linear import LinearHead

HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "actor_actor": ActorActorHead,
    "acrn": ACRNHead,
    "acar": ACARHead,
}


def build_head(name: str, in_channels: int, num_classes: int, **hparams) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"unknown head '{name}'; choose from {sorted(HEADS)}")
    return HEADS[name](in_channels, num_classes, **hparams)
