"""Video backbones: a plain dict of torchvision Kinetics models, cut before pooling.

Each entry builds ``nn.Module: (B, 3, T, H, W) -> (B, C, T', H', W')`` and knows its
weights enum (downloaded by torchvision when online), its input normalisation and its
default clip.  ``weights`` may be ``None`` (the torchvision default name, downloaded),
a path to a state dict (offline), or ``random_init=True`` (explicit, recorded).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import video as tvv

from .artifacts import ArtifactError

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]      # torchvision constructor
    weights: str                         # torchvision weights enum, e.g. "R3D_18_Weights.DEFAULT"
    channels: int
    stride: int                          # spatial output stride
    clip_frames: int = 32
    clip_stride: int = 2
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD


class VideoResNetTrunk(nn.Module):
    """torchvision VideoResNet without avgpool/fc: (B,3,T,H,W) -> (B,512,T/8,H/16,W/16)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem, self.layer1, self.layer2 = net.stem, net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


BACKBONES: dict[str, Backbone] = {
    "r3d_18": Backbone(tvv.r3d_18, "R3D_18_Weights.DEFAULT", 512, 16),
    "mc3_18": Backbone(tvv.mc3_18, "MC3_18_Weights.DEFAULT", 512, 16),
    "r2plus1d_18": Backbone(tvv.r2plus1d_18, "R2Plus1D_18_Weights.DEFAULT", 512, 16),
}


def build_backbone(name: str, weights: str | None = None, random_init: bool = False,
                   seed: int = 0) -> tuple[nn.Module, Backbone, str]:
    """Return ``(trunk in eval mode, its Backbone entry, a weights identity string)``."""
    if name not in BACKBONES:
        raise ArtifactError(name, f"unknown backbone; choose from {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    if random_init:
        torch.manual_seed(seed)
        net, identity = spec.build(weights=None), f"random-init(seed={seed})"
    elif weights is not None and Path(weights).exists():
        net = spec.build(weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        identity = f"file:{Path(weights).name}:{_digest(weights)}"
    else:
        enum = weights or spec.weights
        try:
            net = spec.build(weights=enum)
        except Exception as err:
            raise ArtifactError(enum, "cannot load backbone weights "
                                f"({err.__class__.__name__}); offline, pass --weights PATH "
                                "to a state dict, or --random-init") from None
        identity = enum
    trunk = VideoResNetTrunk(net) if name in ("r3d_18", "mc3_18", "r2plus1d_18") else net
    return trunk.eval(), spec, identity


def _digest(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
