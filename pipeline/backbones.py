"""Video backbones: a plain dict of torchvision Kinetics models, cut before pooling,
and one non-learned descriptor.

Each entry of :data:`BACKBONES` builds a trunk ``nn.Module: (B, 3, T, H, W) ->
(B, C, T', H', W')`` (the spatio-temporal map before global pooling and classifier)
and knows its torchvision Kinetics-400 weights enum, its input normalisation (taken
from the weights' own transforms) and its default clip.  ``hoghof``
(:mod:`pipeline.baseline_backbone`) has no weights (``weights=None``): its
normalisation is its own ``norm`` (mean 0.5, std 0.5: inputs in [-1, 1]).

============  =====  ======  ==============================================  =========
name          C      stride  trunk                                           clip
============  =====  ======  ==============================================  =========
r3d_18        512    16      stem..layer4 (no max-pool: stride 16, not 32)   32 x 2
mc3_18        512    16      idem                                            32 x 2
r2plus1d_18   512    16      idem                                            32 x 2
s3d           1024   32      ``features``                                    32 x 2
mvit_v2_s     768    32      tokens after the last norm, class token         16 x 4
                             dropped, reshaped to (T', H', W')
swin3d_t      768    32      ``norm(features)``, channels-last -> (C, T..)   32 x 2
swin3d_s      768    32      idem                                            32 x 2
swin3d_b      1024   32      idem                                            32 x 2
hoghof        30     20      non-learned HOG + HOF + colour per 20x20 cell   8 x 2
                             (T' = 1; ~0.03 s per 8x160x160 clip on 1 core)
============  =====  ======  ==============================================  =========

Input constraints: every trunk takes any H, W that are multiples of its stride
(``extract`` pads to a multiple of ``pad_multiple``, which must be a multiple of the
stride; by default the smallest such from 32 on: 32, or 40 for ``hoghof``) and any clip
length from ``min_frames`` on.  A trunk with ``sees_image`` (``hoghof``) is also told
where the image lies in the padded input and ignores the padding; the learned trunks
see the padding (zeros after normalising) and their border cells depend on it.
torchvision's MViT ``forward`` fixes the token grid to its constructor's 16x224x224;
the trunk here takes the grid from the patch embedding instead, and torchvision's
relative-position code interpolates its tables to the grid (as MViTv2 does), so MViT
also runs fully convolutionally at other sizes (identical to torchvision at 16x224x224).
Swin3D pads to its window internally and returns channels-last maps (permuted here).

``dilate_last=True`` (ResNet-style only): the last stage (``layer4``, res5) gets spatial
stride 1 and dilation 2, halving the output stride from 16 to 8, as the AVA papers do
for res5.  The weights are unchanged.

Weights (``build_backbone``): ``None`` = the backbone's torchvision default weights
(downloaded by torchvision when online, read from its cache offline), a torchvision
weights name (``R2Plus1D_18_Weights.KINETICS400_V1`` or just ``KINETICS400_V1``), a path
to a state dict (offline), or ``random_init=True`` (explicit, seeded, recorded).
A non-learned backbone (``hoghof``) takes no weights (passing any is an error), ignores
``random_init`` (there is nothing to initialise; the store records ``random_init`` false)
and its identity is ``"non-learned"``.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight
from torchvision.models import video as tvv

from .artifacts import ArtifactError
from .baseline_backbone import HogHof

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


NON_LEARNED = "non-learned"       # the weights identity of a backbone without weights


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]      # torchvision constructor (or a non-learned module's)
    weights: str | None                  # torchvision weights enum, e.g. "R3D_18_Weights.DEFAULT";
                                         # None: non-learned (no weights at all)
    trunk: Callable[[nn.Module], nn.Module]
    channels: int
    stride: int                          # spatial output stride (undilated)
    clip_frames: int = 32
    clip_stride: int = 2                 # frames at extract's clip_fps (30: AVA's rate)
    min_frames: int = 1
    resnet: bool = False                 # supports dilate_last
    head_prefixes: tuple[str, ...] = ("fc.", "head.", "classifier.")
    norm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
                                         # (mean, std) when there are no weights
    sees_image: bool = False             # the trunk takes ``image=(h, w)``, the image's size
                                         # at the top-left of the padded input, and then
                                         # describes only the image (its map inside the
                                         # image does not depend on the padding)

    @property
    def learned(self) -> bool:
        return self.weights is not None

    @cached_property
    def weights_enum(self):
        """The torchvision weights enum (None for a non-learned backbone)."""
        return get_weight(self.weights) if self.learned else None

    @property
    def mean(self) -> tuple[float, float, float]:
        if self.norm is not None:
            return tuple(self.norm[0])
        return tuple(self.weights_enum.transforms().mean)

    @property
    def std(self) -> tuple[float, float, float]:
        if self.norm is not None:
            return tuple(self.norm[1])
        return tuple(self.weights_enum.transforms().std)


def _identity(net: nn.Module) -> nn.Module:
    return net


def _hoghof(**kwargs) -> nn.Module:
    return HogHof()


BACKBONES: dict[str, Backbone] = {
    "r3d_18": Backbone(tvv.r3d_18, "R3D_18_Weights.DEFAULT", VideoResNetTrunk, 512, 16,
                       resnet=True),
    "mc3_18": Backbone(tvv.mc3_18, "MC3_18_Weights.DEFAULT", VideoResNetTrunk, 512, 16,
                       resnet=True),
    "r2plus1d_18": Backbone(tvv.r2plus1d_18, "R2Plus1D_18_Weights.DEFAULT", VideoResNetTrunk,
                            512, 16, resnet=True),
    "s3d": Backbone(tvv.s3d, "S3D_Weights.DEFAULT", S3DTrunk, 1024, 32, min_frames=8),
    "mvit_v2_s": Backbone(tvv.mvit_v2_s, "MViT_V2_S_Weights.DEFAULT", MViTTrunk, 768, 32,
                          clip_frames=16, clip_stride=4, min_frames=2),
    "swin3d_t": Backbone(tvv.swin3d_t, "Swin3D_T_Weights.DEFAULT", SwinTrunk, 768, 32),
    "swin3d_s": Backbone(tvv.swin3d_s, "Swin3D_S_Weights.DEFAULT", SwinTrunk, 768, 32),
    "swin3d_b": Backbone(tvv.swin3d_b, "Swin3D_B_Weights.DEFAULT", SwinTrunk, 1024, 32),
    "hoghof": Backbone(_hoghof, None, _identity, HogHof.channels, HogHof.stride,
                       clip_frames=8, clip_stride=2, min_frames=2,
                       norm=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), sees_image=True),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ArtifactError(name, f"unknown backbone; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, weights: str | None = None, random_init: bool = False,
                   seed: int = 0, dilate_last: bool = False
                   ) -> tuple[nn.Module, Backbone, str]:
    """Return ``(trunk in eval mode, its Backbone entry, a weights identity string)``.

    The identity is the resolved torchvision weights name, ``file:<name>:<sha256-16>``
    for a state-dict file, ``random-init(seed=N)``, or ``non-learned`` for a backbone
    without weights (which takes no ``weights`` and ignores ``random_init`` and ``seed``).
    """
    spec = get_backbone(name)
    if dilate_last and not spec.resnet:
        raise ArtifactError(name, "dilate_last applies to the ResNet-style backbones only "
                            "(r3d_18, mc3_18, r2plus1d_18)")
    if not spec.learned:
        if weights is not None:
            raise ArtifactError(weights, f"{name} is non-learned and takes no weights; "
                                "drop --weights")
        return spec.trunk(spec.build()).eval(), spec, NON_LEARNED
    if random_init:
        if weights is not None:
            raise ArtifactError(weights, "--random-init and --weights exclude each other")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = spec.build(weights=None)
        identity = f"random-init(seed={seed})"
    elif weights is not None and _looks_like_path(weights):
        net = _from_file(spec, Path(weights))
        identity = f"file:{Path(weights).name}:{_digest(weights)}"
    else:
        enum = _resolve_enum(spec, weights)
        net = _from_torchvision(spec, enum)
        identity = str(enum)
    trunk = spec.trunk(net)
    if dilate_last:
        dilate_last_stage(trunk)
    return trunk.eval(), spec, identity


def feature_stride(spec: Backbone, dilate_last: bool = False) -> int:
    return spec.stride // 2 if dilate_last else spec.stride


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


def _looks_like_path(weights: str) -> bool:
    return (Path(weights).exists() or os.sep in weights or "/" in weights
            or weights.endswith((".pt", ".pth", ".pkl", ".bin", ".ckpt")))


def _resolve_enum(spec: Backbone, weights: str | None):
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
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _from_torchvision(spec: Backbone, enum) -> nn.Module:
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


def _from_file(spec: Backbone, path: Path) -> nn.Module:
    """The model with a state dict from ``path`` (a checkpoint dict is unwrapped)."""
    if not path.is_file():
        raise ArtifactError(path, "weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle / zip errors
        raise ArtifactError(path, f"not a loadable state dict ({err.__class__.__name__})"
                            ) from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ArtifactError(path, "not a state dict of tensors")
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    net = spec.build(weights=None)
    trunk_state = {k: v for k, v in state.items() if not k.startswith(spec.head_prefixes)}
    own = {k for k in net.state_dict() if not k.startswith(spec.head_prefixes)}
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


def _digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
