"""What every head shares and declares.

Every head is split as mmaction2 splits its RoI head, into an RoI feature extractor, the
head's own relation part and a classifier; only the relation part lives in the head's
file, the rest is :class:`Head`::

    A       = actors(x, rois)                     (N, C)   RoIAlign 7x7 + spatial max-pool
    parts   = the head's relation part            [(N, c_1), (N, c_2), ...]   ``features``
    logits  = Linear(Dropout(Norm([parts])))      (N, K)   ``classify``

``Norm`` is the identity, or, for a head whose config has ``norm: batch`` (linear, atr), a
BatchNorm1d over the concatenation: each input channel of the classifier standardised
(batch statistics in training, running ones in eval), as a learned backbone's own BN layers
give its features.  The hand-made hoghof channels are far apart in scale and correlated, and
SGD then fits a rare class's classifier far less well than a well-conditioned fit does
(README: the grown world's ``reach``).

A head declares its hyper-parameters as a frozen :class:`HeadConfig` dataclass (the head's
``Config``, kept as ``head.config``), its bank needs as a :class:`BankRequest` and, for
relation heads, its relation maps (:class:`RelationHead`).  Stages read these through the
types below, never by attribute probing.

Every head is called as ``head(context, rois, bank=None, valid=None)``:

* ``context`` (B, C, H, W), ``rois`` (N, 5): see :mod:`pipeline.models.actor`; a head
  with ``temporal = True`` (``s_only``, ``t_only``) reads (B, C, T, H, W) maps with T time
  bins instead (``extract.temporal: T``; the readers give the other heads the bins' mean);
* ``bank``: ``(slots (B, S, ...), mask (B, S))`` for a head whose ``bank_request`` is not
  None (``(slots, mask, times (B, S))`` when it asks for ``times``: each slot's second
  relative to the keyframe; then ``scene (B, T, C, H, W), scene_mask (B, T), scene_times
  (B, T)`` when it asks for ``scene``), else ignored;
* ``valid`` (B, 2) int64: ``(rows, cols)`` of context cells inside the image, from the
  top-left corner (``extract`` pads right and bottom).  ``None``: the whole map.  A head
  with ``valid`` computes, for each keyframe, what it computes on that keyframe's map
  cropped to ``[:rows, :cols]``: every pooling, attention and RoI path ignores the cells
  outside (the operators of :mod:`pipeline.models.masking`).  With ``valid=None``, or a
  ``valid`` covering the map, it computes bitwise what it computes without.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .actor import actor_vectors

BANK_KINDS = ("lfb", "acfb", "memory")
BANK_POOLS = ("none", "2x2", "4x4")    # acfb: max-pool of the banked first-order maps
NORMS = ("none", "batch")              # before the classifier (linear, atr: ``norm``)


@dataclass(frozen=True)
class BankRequest:
    """The bank a head reads: built by ``acar bank --kind <kind>``, read by the bank reader."""

    kind: str                       # "lfb" (actor vectors) | "acfb" (first-order maps)
                                    # | "memory" (t_only's pooled person features)
    window: int                     # seconds either side of the keyframe
    max_per_step: int | None        # at most this many banked actors per second (None: all)
    exclude_current: bool           # leave out the keyframe's own second
    dim: int                        # channels of one banked item
    pool: str | None = None         # acfb: the bank's --pool (one of BANK_POOLS)
    times: bool = False             # also each slot's second relative to the keyframe
    scene: bool = False             # acfb: also the window's context maps (bank --scene)

    def __post_init__(self) -> None:
        if self.kind not in BANK_KINDS:
            raise ValueError(f"unknown bank kind '{self.kind}'; choose from {BANK_KINDS}")
        if self.kind == "acfb" and self.pool not in BANK_POOLS:
            raise ValueError(f"unknown bank pool '{self.pool}'; choose from {BANK_POOLS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BankRequest:
        return cls(**d)


@runtime_checkable
class RelationHead(Protocol):
    """A head with spatial relation maps (``acrn``, ``acar``, ``acfb``): the class activation
    maps of ``acar demo --heatmap`` (ACAR Fig. 6, ACRN Fig. 5).

    * ``relation_maps(context, rois, bank=None, valid=None) -> (A, maps (N, d, h, w))``,
      the maps before their average pooling;
    * ``relation_weight`` (K, d): the classifier weights that read the pooled maps;
    * ``relation_grid``: ``(offset, step)``, cell i of the maps is centred on context cell
      ``offset + step * i``; None when the maps are pooled to one cell.
    """

    def relation_maps(self, context: Tensor, rois: Tensor, bank: Any = None,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor]: ...

    @property
    def relation_weight(self) -> Tensor: ...

    @property
    def relation_grid(self) -> tuple[float, float] | None: ...


# ---- typed hyper-parameters ---------------------------------------------------------------

@dataclass(frozen=True)
class HeadConfig:
    """Base of every head's config dataclass: ``head`` names the head in error messages;
    subclasses check their fields in ``__post_init__`` with :meth:`check`."""

    head: ClassVar[str] = "?"
    roi_aligned: ClassVar[bool] = True   # RoIAlign's half-pixel offset (a head that offers
                                         # ACAR-Net's False declares it as a field)

    @classmethod
    def from_dict(cls, hparams: dict[str, Any]) -> HeadConfig:
        """The config of ``hparams`` (missing keys: the defaults); an unknown key is a
        one-line ValueError naming the head, the key and the known keys."""
        known = [f.name for f in fields(cls)]
        for key in hparams:
            if key not in known:
                raise ValueError(f"head '{cls.head}': unknown hyper-parameter '{key}'; "
                                 f"known: {', '.join(known)}")
        return cls(**hparams)

    def check(self, ok: bool, name: str, rule: str) -> None:
        """A one-line ValueError naming the head and the field unless ``ok``."""
        if not ok:
            raise ValueError(f"head '{self.head}': {name} must be {rule}, "
                             f"got {getattr(self, name)!r}")

    def check_choice(self, name: str, choices) -> None:
        self.check(getattr(self, name) in choices, name, f"one of {', '.join(choices)}")

    def check_range(self, name: str, low: float, high: float | None = None,
                    high_open: bool = False) -> None:
        """``low <= value <= high`` (``< high`` if ``high_open``; no upper bound if None)."""
        v = getattr(self, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= low
        if high is not None:
            ok = ok and (v < high if high_open else v <= high)
        rule = (f">= {low}" if high is None
                else f"in [{low}, {high}{')' if high_open else ']'}")
        self.check(ok, name, rule)

    def check_dropout(self, *names: str) -> None:
        for name in names:
            self.check_range(name, 0.0, 1.0, high_open=True)


# ---- the shared part of every head --------------------------------------------------------

class Head(nn.Module):
    """RoI features -> the head's relation part (``features``) -> concatenation -> dropout ->
    classifier.  A subclass sets ``Config``, builds its relation part in ``__init__`` and
    then calls :meth:`add_classifier` last (so a seeded head draws its initial weights in
    the same order as always), and implements ``features``.

    ``classifier_name`` is the classifier's attribute (and so its ``state_dict`` key):
    ``fc``, or ``fc2`` for acar and acfb, as in every checkpoint made so far.
    """

    Config: ClassVar[type[HeadConfig]]
    classifier_name: ClassVar[str] = "fc"
    bank_request: BankRequest | None = None   # reads no bank
    temporal: ClassVar[bool] = False          # reads (B, C, T, H, W) maps with time bins

    def __init__(self, **hparams: Any):
        super().__init__()
        self.config = self.Config.from_dict(hparams)

    def actors(self, x: Tensor, rois: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (N, 5), valid (B, 2) | None -> A (N, C): RoIAlign ``roi_size`` x
        ``roi_size``, max-pool, on ``x`` with its cells outside ``valid`` replaced by the
        nearest image cell (so RoIAlign samples what it samples on the cropped map)."""
        return actor_vectors(x, rois, self.config.roi_size, valid,
                             self.config.roi_aligned)                # (N, C)

    def add_classifier(self, in_features: int, num_classes: int, bias: bool = True,
                       norm: str = "none") -> None:
        """Norm (``norm``: one of :data:`NORMS`), Dropout(``config.dropout``) and
        Linear(in_features -> num_classes).  The norm has no random init, so a seeded head
        draws the classifier's weights as it does without."""
        self.classifier_norm = nn.BatchNorm1d(in_features) if norm == "batch" else None
        self.dropout = nn.Dropout(self.config.dropout)
        setattr(self, self.classifier_name, nn.Linear(in_features, num_classes, bias=bias))

    @property
    def classifier(self) -> nn.Linear:
        return getattr(self, self.classifier_name)

    def classify(self, parts: list[Tensor]) -> Tensor:
        """[(N, c_1), (N, c_2), ...] -> logits (N, K) = Linear(Dropout(concatenation))."""
        x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)    # (N, sum c_i)
        bn = self.classifier_norm
        if bn is not None:
            # one actor has no batch statistics: it is standardised with the running ones
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                             eps=bn.eps) if self.training and x.shape[0] < 2 else bn(x)
        return self.classifier(self.dropout(x))                      # (N, K)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        """The head's relation part: the (N, c_i) vectors the classifier reads."""
        raise NotImplementedError

    def forward(self, context: Tensor, rois: Tensor, *, bank: Any = None,
                valid: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (N, 5) -> logits (N, K); see the module docstring.  ``bank`` and
        ``valid`` are keyword-only, so that ``head(*batch(...))`` cannot pass the valid
        region as a bank."""
        return self.classify(self.features(context, rois, bank, valid))


# ---- bank slots ---------------------------------------------------------------------------

def bank_slots(bank: Any, item: tuple[int, ...], batch_size: int, like: Tensor,
               what: str) -> tuple[Tensor, Tensor]:
    """``bank`` = (slots (B, S, *item), mask (B, S)) or None (no slots), checked, with the
    masked slots zeroed (in ``like``'s dtype): -> (B, S, *item), mask (B, S) bool.  A bank
    that does not fit is a one-line ValueError; ``what`` says what one slot should be."""
    if bank is None:
        return (like.new_zeros(batch_size, 0, *item),
                torch.zeros(batch_size, 0, dtype=torch.bool, device=like.device))
    mem, mask = bank
    if (mem.ndim != 2 + len(item) or mem.shape[0] != batch_size
            or tuple(mem.shape[2:]) != tuple(item) or tuple(mask.shape) != tuple(mem.shape[:2])):
        raise ValueError(f"bank slots {tuple(mem.shape)} (mask {tuple(mask.shape)}) do not "
                         f"fit {batch_size} keyframes of {what}")
    mask = mask.to(torch.bool)
    keep = mask[(...,) + (None,) * len(item)]                        # (B, S, 1, ...)
    return torch.where(keep, mem.to(like.dtype), 0.0), mask
