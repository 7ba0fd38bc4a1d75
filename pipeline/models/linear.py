"""``linear``: the 3D-CNN baseline.  A_i -> dropout -> linear -> logits."""

from __future__ import annotations

from torch import Tensor, nn

from .actor import actor_vectors
from .base import BankRequest


class LinearHead(nn.Module):
    bank_request: BankRequest | None = None   # reads no bank
    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0,
                 roi_size: int = 7):
        super().__init__()
        self.roi_size = roi_size
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, context: Tensor, rois: Tensor, bank=None,
                valid: Tensor | None = None) -> Tensor:
        a = actor_vectors(context, rois, self.roi_size)   # (N, C)
        return self.fc(self.dropout(a))                    # (N, K)
