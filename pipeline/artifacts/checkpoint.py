"""Checkpoints: one ``.pt`` file that rebuilds a trained head on its own.

Keys::

    format: "acar-checkpoint/1"
    head: str                 # name in pipeline.models.HEADS
    hparams: dict             # the head's spec: dataclasses.asdict(pipeline.models.head_config)
                              # (every hyper-parameter; checkpoints written before typed
                              # specs hold only the keys that were set, defaults fill the rest)
    in_channels: int, num_classes: int
    labelmap: LabelMap.to_dict()
    feature_spec: dict        # FeatureSpec.to_dict() of the features it was trained on
    state_dict: dict[str, Tensor]
    train: dict               # train config + progress (epoch, optimizer state) for resume

Everything but tensors is plain Python data, so ``torch.load(weights_only=True)`` works.
"""

from __future__ import annotations

import os

import torch

from . import ArtifactError
from .atomic import atomic_path

FORMAT = "acar-checkpoint/1"
REQUIRED = ("head", "hparams", "in_channels", "num_classes", "labelmap", "feature_spec",
            "state_dict")


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint is missing {missing}")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **ckpt}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except Exception as err:  # torch raises many kinds for a bad file
        raise ArtifactError(path, f"not a readable checkpoint ({err.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ArtifactError(path, f"not an acar checkpoint (expected format {FORMAT})")
    return ckpt
