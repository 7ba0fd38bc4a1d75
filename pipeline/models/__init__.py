"""Heads, selected by name.  Every head has the signature::

    Head(in_channels: int, num_classes: int, **hparams)
    head(context: (B, C, H, W), rois: (N, 5), bank=None) -> logits (N, num_classes)

See :mod:`pipeline.models.actor` for the ``rois`` convention.  Bank heads (``acfb``,
``lfb``) take ``bank = (slots (B, S, ...), mask (B, S))``, the long-term context of each
keyframe (:class:`pipeline.artifacts.banks.BankReader`), and say which bank they read in
their ``bank_request`` dict; ``bank=None`` is an empty bank.

Heads with actor-context relation maps (``acrn``, ``acar``, ``acfb``) also have
``relation_maps(context, rois, bank=None) -> (A, maps (N, d, h, w))``, the maps before
their average pooling, ``relation_weight`` (K, d), the classifier weights that read the
pooled maps, and ``relation_grid``, where the maps' cells lie on the context map: the
class activation maps of ``acar demo --heatmap`` (ACAR Fig. 6, ACRN Fig. 5).
"""

from __future__ import annotations

from torch import nn

from .acar import ACARHead
from .acfb import ACFBHead
from .acrn import ACRNHead
from .actor_actor import ActorActorHead
from .base import BANK_POOLS, BankRequest, RelationHead
from .lfb import LFBHead
from .linear import LinearHead

__all__ = ["BANK_POOLS", "HEADS", "BankRequest", "RelationHead", "build_head", "head_config"]

HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "actor_actor": ActorActorHead,
    "acrn": ACRNHead,
    "acar": ACARHead,
    "acfb": ACFBHead,
    "lfb": LFBHead,
}


def head_config(name: str, hparams: dict) -> dict:
    """The head's hyper-parameters, checked: an unknown head or key is a one-line ValueError.

    Placeholder until each head declares a typed config dataclass: checks the keys against
    the constructor's keyword arguments and returns them.
    """
    import inspect

    if name not in HEADS:
        raise ValueError(f"unknown head '{name}'; choose from {', '.join(sorted(HEADS))}")
    params = inspect.signature(HEADS[name].__init__).parameters
    known = [p for p in params if p not in ("self", "in_channels", "num_classes")]
    unknown = [k for k in hparams if k not in known]
    if unknown:
        raise ValueError(f"head '{name}': unknown hyper-parameter '{unknown[0]}'; "
                         f"known: {', '.join(known)}")
    return dict(hparams)


def build_head(name: str, in_channels: int, num_classes: int, **hparams) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"unknown head '{name}'; choose from {sorted(HEADS)}")
    return HEADS[name](in_channels, num_classes, **hparams)
