"""Heads, selected by name.  Every head has the signature::

    Head(in_channels: int, num_classes: int, **hparams)
    head(context: (B, C, H, W), rois: (N, 5), bank=None, valid=None) -> logits (N, num_classes)

See :mod:`pipeline.models.actor` for the ``rois`` convention and :mod:`pipeline.models.base`
for what every head shares (RoI features, concatenation, dropout, classifier) and declares.
A head's hyper-parameters are its typed ``Config`` dataclass (:func:`head_config`; the head
keeps it as ``head.config``); ``dataclasses.asdict`` of it is what a checkpoint records.

Bank heads (``acfb``, ``lfb``) take ``bank = (slots (B, S, ...), mask (B, S))``, the
long-term context of each keyframe (:class:`pipeline.bank_reader.BankReader`), and say which
bank they read in their ``bank_request`` (:class:`BankRequest`); ``bank=None`` is an empty
bank.

Heads with actor-context relation maps (``acrn``, ``acar``, ``acfb``) are
:class:`RelationHead`: ``relation_maps(context, rois, bank=None, valid=None) -> (A, maps
(N, d, h, w))``, the maps before their average pooling, ``relation_weight`` (K, d), the
classifier weights that read the pooled maps, and ``relation_grid``, where the maps' cells
lie on the context map: the class activation maps of ``acar demo --heatmap`` (ACAR Fig. 6,
ACRN Fig. 5).

Heads that read time (``s_only``, ``t_only``; ``Head.temporal``, :func:`reads_time`) take
``context`` (B, C, T, H, W) with T time bins (``extract.temporal: T``).

Where to add a head: a module here with its ``Config`` dataclass and a :class:`Head`
subclass holding only its relation part, then one line in ``HEADS``.
"""

from __future__ import annotations

from typing import Any

from .acar import ACARHead
from .acfb import ACFBHead
from .acrn import ACRNHead
from .actor_actor import ActorActorHead
from .atr import ATRHead
from .base import BANK_POOLS, BankRequest, Head, HeadConfig, RelationHead
from .lfb import LFBHead
from .linear import LinearHead
from .s_only import SOnlyHead
from .t_only import TOnlyHead

__all__ = ["BANK_POOLS", "HEADS", "BankRequest", "Head", "HeadConfig", "RelationHead",
           "build_head", "head_config", "reads_time"]

HEADS: dict[str, type[Head]] = {
    "linear": LinearHead,
    "actor_actor": ActorActorHead,
    "acrn": ACRNHead,
    "acar": ACARHead,
    "acfb": ACFBHead,
    "lfb": LFBHead,
    "atr": ATRHead,
    "s_only": SOnlyHead,
    "t_only": TOnlyHead,
}


def head_class(name: str) -> type[Head]:
    """The head class of ``name``; an unknown name is a one-line ValueError."""
    if name not in HEADS:
        raise ValueError(f"unknown head '{name}'; choose from {', '.join(sorted(HEADS))}")
    return HEADS[name]


def head_config(name: str, hparams: dict[str, Any]) -> HeadConfig:
    """The typed, checked config of head ``name``: ``hparams`` over the head's defaults.  An
    unknown head or key, or a bad value, is a one-line ValueError naming the head."""
    return head_class(name).Config.from_dict(hparams)


def reads_time(head: str | Head) -> bool:
    """Whether a head (a name or an instance) reads context maps with time bins
    (``Head.temporal``: (B, C, T, H, W)); the readers pass it to ``FeatureCache(time=)``."""
    return bool(head_class(head).temporal if isinstance(head, str) else
                getattr(head, "temporal", False))


def build_head(name: str, in_channels: int, num_classes: int, **hparams: Any) -> Head:
    """A new head ``name`` (``hparams`` checked as by :func:`head_config`)."""
    return head_class(name)(in_channels, num_classes, **hparams)
