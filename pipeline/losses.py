"""AVA's output convention: a softmax over the pose classes, a sigmoid for the rest.

Training uses per-class binary cross-entropy on those probabilities (the pose classes
are mutually exclusive: a person has exactly one pose), as in the ACAR-Net code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def log_probs(logits: Tensor, pose: list[int]) -> tuple[Tensor, Tensor]:
    """(N, K) logits -> (log p, log(1 - p)), softmax over ``pose``, sigmoid elsewhere."""
    logp = F.logsigmoid(logits)
    log1mp = F.logsigmoid(-logits)
    if len(pose) > 1:
        idx = torch.as_tensor(pose, device=logits.device)
        lp = torch.log_softmax(logits[:, idx], dim=1)
        logp = logp.index_copy(1, idx, lp)
        log1mp = log1mp.index_copy(1, idx, torch.log1p(-lp.exp().clamp(max=1 - 1e-6)))
    return logp, log1mp


def activate(logits: Tensor, pose: list[int]) -> Tensor:
    """(N, K) logits -> (N, K) class probabilities."""
    return log_probs(logits, pose)[0].exp()


def ava_loss(logits: Tensor, targets: Tensor, pose: list[int], reduction: str = "mean"
             ) -> Tensor:
    """Per-class BCE of (N, K) logits against (N, K) multi-hot targets, mean or sum."""
    logp, log1mp = log_probs(logits, pose)
    loss = -(targets * logp + (1 - targets) * log1mp)
    return loss.sum() if reduction == "sum" else loss.mean()
