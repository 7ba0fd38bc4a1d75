"""The torchvision Kinetics-400 video models, cut before pooling (one family of
:data:`pipeline.backbones.BACKBONES`).

Each trunk is ``nn.Module: (B, 3, T, H, W) -> (B, C, T', H', W')``, the spatio-temporal map
before global pooling and classifier; its weights come from torchvision (its cache offline,
a download online), a state-dict file, or an explicit seeded random init.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.models import get_weight

from ..artifacts import ArtifactError
from .weights import read_tensors

if TYPE_CHECKING:
    from . import Backbone

DOWNLOAD_TIMEOUT_S = 30.0


class VideoResNetTrunk(nn.Module):
    """torchvision VideoResNet without avgpool/fc: (B,3,T,H,W) -> (B,512,T/8,H/16,W/16)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem, self.layer1, self.layer2 = net.stem, net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


class S3DTrunk(nn.Module):
    """torchvision S3D without avgpool/classifier: (B,3,T,H,W) -> (B,1024,T/8,H/32,W/32)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features = net.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MViTTrunk(nn.Module):
    """torchvision MViT v2 tokens as a map: (B,3,T,H,W) -> (B,768,T/2,H/32,W/32)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv_proj, self.pos_encoding = net.conv_proj, net.pos_encoding
        self.blocks, self.norm = net.blocks, net.norm

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Normalised tokens (B, 1 + T'H'W', C), class token first, and their grid."""
        x = self.conv_proj(x)
        thw = tuple(int(s) for s in x.shape[2:])
        x = self.pos_encoding(x.flatten(2).transpose(1, 2))
        for block in self.blocks:
            x, thw = block(x, thw)
        return self.norm(x), thw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (t, h, w) = self.tokens(x)
        return x[:, 1:].reshape(x.shape[0], t, h, w, x.shape[-1]).permute(0, 4, 1, 2, 3)


class SwinTrunk(nn.Module):
    """torchvision Swin3D without avgpool/head, channels first: -> (B,C,T/2,H/32,W/32)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.patch_embed, self.pos_drop = net.patch_embed, net.pos_drop
        self.features, self.norm = net.features, net.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.features(self.pos_drop(self.patch_embed(x))))   # B T H W C
        return x.permute(0, 4, 1, 2, 3)


def dilate_last_stage(trunk: nn.Module) -> None:
    """res5 with spatial stride 1 and dilation 2 (in place; weights are unchanged)."""
    for conv in trunk.layer4.modules():
        if not isinstance(conv, nn.Conv3d):
            continue
        kt, kh, kw = conv.kernel_size
        conv.stride = (conv.stride[0], 1, 1)
        if kh > 1 or kw > 1:
            conv.dilation = (conv.dilation[0], 2, 2)
            conv.padding = (conv.padding[0], (kh - 1), (kw - 1))


def looks_like_path(weights: str) -> bool:
    return (Path(weights).exists() or os.sep in weights or "/" in weights
            or weights.endswith((".pt", ".pth", ".pkl", ".bin", ".ckpt")))


def resolve_enum(spec: Backbone, weights: str | None):
    enum_cls = type(spec.weights_enum)
    if weights is None:
        return spec.weights_enum
    try:
        enum = get_weight(weights) if "." in weights else enum_cls[weights]
    except (KeyError, ValueError, AttributeError):
        names = [f"{enum_cls.__name__}.{m}" for m in enum_cls.__members__]
        raise ArtifactError(weights, "neither a weights file nor a torchvision weights name "
                            f"(for this backbone: {names})") from None
    if not isinstance(enum, enum_cls):
        raise ArtifactError(weights, f"weights are for another model (expected "
                            f"{enum_cls.__name__})")
    return enum


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def from_torchvision(spec: Backbone, enum) -> nn.Module:
    """The model with ``enum``'s weights: torchvision's cache, else a download."""
    filename = enum.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return spec.build(weights=enum)
    except Exception as err:  # noqa: BLE001 - URLError, timeouts, hash mismatch...
        what = "cannot load" if cached.exists() else "cannot download"
        raise ArtifactError(str(enum), f"{what} the torchvision weights "
                            f"({err.__class__.__name__}: {str(err)[:80]}); offline, pass "
                            f"--weights PATH to a state dict (such as {filename} from "
                            f"{enum.url}), or --random-init") from None


def from_file(spec: Backbone, path: Path, with_head: bool = False) -> nn.Module:
    """The model with a state dict from ``path`` (a checkpoint dict is unwrapped); the
    classifier's keys are ignored unless ``with_head`` (then they must be there too)."""
    state = read_tensors(path)
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    net = spec.build(weights=None)
    kept = (lambda k: True) if with_head else (lambda k: not k.startswith(spec.head_prefixes))
    trunk_state = {k: v for k, v in state.items() if kept(k)}
    own = {k for k in net.state_dict() if kept(k)}
    missing, unexpected = sorted(own - set(trunk_state)), sorted(set(trunk_state) - own)
    if missing or unexpected:
        raise ArtifactError(path, f"weights do not fit {spec.build.__name__}: missing "
                            f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                            f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    try:
        net.load_state_dict(trunk_state, strict=False)
    except RuntimeError as err:
        raise ArtifactError(path, f"weights do not fit {spec.build.__name__} "
                            f"({str(err).splitlines()[-1].strip()[:120]})") from None
    return net


def digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
