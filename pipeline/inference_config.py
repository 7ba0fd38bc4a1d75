"""Parameters of prediction with a trained head, kept apart from :mod:`pipeline.inference`
(which imports torch) so that the eval stage can read them without torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PredictConfig:
    det_score_thr: float = 0.85      # detections used at test time
    views: list[str] | None = None   # None: every view in the store (TTA)
    batch_size: int = 16             # keyframes per forward pass
    in_memory: bool = True
