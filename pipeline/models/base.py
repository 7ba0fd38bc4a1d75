"""What every head declares beyond ``forward``: its bank needs and, for relation heads,
its relation maps.  Stages read these through the types below, never by attribute probing.

Every head is called as ``head(context, rois, bank=None, valid=None)``:

* ``context`` (B, C, H, W), ``rois`` (N, 5): see :mod:`pipeline.models.actor`;
* ``bank``: ``(slots (B, S, ...), mask (B, S))`` for a head whose ``bank_request`` is not
  None, else ignored;
* ``valid`` (B, 2) int64: ``(rows, cols)`` of context cells inside the image, from the
  top-left corner (``extract`` pads right and bottom).  ``None``: the whole map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

BANK_KINDS = ("lfb", "acfb")
BANK_POOLS = ("none", "2x2", "4x4")    # acfb: max-pool of the banked first-order maps


@dataclass(frozen=True)
class BankRequest:
    """The bank a head reads: built by ``acar bank --kind <kind>``, read by the bank reader."""

    kind: str                       # "lfb" (actor vectors) | "acfb" (first-order maps)
    window: int                     # seconds either side of the keyframe
    max_per_step: int | None        # at most this many banked actors per second (None: all)
    exclude_current: bool           # leave out the keyframe's own second
    dim: int                        # channels of one banked item
    pool: str | None = None         # acfb: the bank's --pool (one of BANK_POOLS)

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
