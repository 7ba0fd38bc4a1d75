"""``linear``: the 3D-CNN baseline.  A_i -> dropout -> linear -> logits::

    A       = actors(context, rois)              (N, C)   RoIAlign 7x7 + max-pool, image only
    logits  = Linear(Dropout(Norm(A)))           (N, K)

``norm`` = batch: a BatchNorm1d on A before the classifier (:mod:`pipeline.models.base`).

Defaults: ``dropout`` = 0.0, ``roi_size`` = 7, ``norm`` = none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .base import NORMS, Head, HeadConfig


@dataclass(frozen=True)
class LinearConfig(HeadConfig):
    head = "linear"
    dropout: float = 0.0        # before the classifier
    roi_size: int = 7           # RoIAlign output size
    roi_aligned: bool = True    # RoIAlign's half-pixel offset (ACAR-Net: False)
    norm: str = "none"          # none | batch: BatchNorm1d on the classifier's input

    def __post_init__(self) -> None:
        self.check_dropout("dropout")
        self.check_choice("norm", NORMS)
        self.check(isinstance(self.roi_aligned, bool), "roi_aligned", "true or false")
        self.check_range("roi_size", 1)


class LinearHead(Head):
    Config = LinearConfig
    config: LinearConfig

    def __init__(self, in_channels: int, num_classes: int, **hparams: Any):
        super().__init__(**hparams)
        self.add_classifier(in_channels, num_classes, norm=self.config.norm)

    def features(self, context: Tensor, rois: Tensor, bank: Any = None,
                 valid: Tensor | None = None) -> list[Tensor]:
        return [self.actors(context, rois, valid)]       # [(N, C)]
