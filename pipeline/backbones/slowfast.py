"""SlowFast (Feichtenhofer et al., 2019) as the AVA papers run it: res5 dilated, stride 16.

Two ResNet pathways see the same clip of ``T`` frames (``T`` a multiple of ``alpha``):

* the **Slow** pathway sees ``T / alpha`` of them: ``linspace(0, T - 1, T / alpha)``
  truncated to integers (``full_span``, PySlowFast's ``pack_pathway_output`` and ACAR-Net's
  R50), or every ``alpha``-th frame from the first (ACAR-Net's R101);
* the **Fast** pathway sees all ``T`` with ``1 / beta_inv`` of the channels.

After the stem and after res2, res3, res4, a lateral connection convolves the Fast map
with a ``(fusion_kernel, 1, 1)`` kernel, temporal stride ``alpha``, twice the Fast channels
(then batch norm and ReLU when ``fusion_bn``), and concatenates it to the Slow map's
channels.  Shapes for ``(B, 3, T, H, W)``, R50, width 64, ``alpha`` 4, ``beta_inv`` 8::

    Slow                                          Fast
    stem 1x7x7 /2, max 1x3x3 /2 (B, 64, T/4, H/4)  stem 5x7x7 /2, max /2  (B,   8, T, H/4)
      + fuse(fast)                (B,  80, ...)
    res2 x3  temporal 1           (B,  256, T/4, H/4)   res2 x3  t3       (B,  32, T, H/4)
      + fuse                      (B,  320, ...)
    res3 x4  t1, /2               (B,  512, T/4, H/8)   res3 x4  t3, /2   (B,  64, T, H/8)
      + fuse                      (B,  640, ...)
    res4 x6  t3, /2               (B, 1024, T/4, H/16)  res4 x6  t3, /2   (B, 128, T, H/16)
      + fuse                      (B, 1280, ...)
    res5 x3  t3, stride 1, dil 2  (B, 2048, T/4, H/16)  res5 x3  t3, dil 2 (B, 256, T, H/16)

    output: cat(mean_T(slow), mean_T(fast))                  (B, 2304, 1, H/16, W/16)

R101 has 23 res4 blocks.  Every block is a bottleneck: ``(kt, 1, 1)`` conv (``kt`` the
stage's temporal kernel: Slow 1, 1, 3, 3 and Fast 3, 3, 3, 3; with ``temporal_blocks``
only the first n blocks of a stage get it, the rest 1: PySlowFast's
``NUM_BLOCK_TEMP_KERNEL``) -> 1x3x3 conv carrying the stage's spatial stride and dilation
-> 1x1x1 conv to 4x the width; each conv is followed by batch norm (eps 1e-5) and ReLU, the
last ReLU after the sum with the shortcut (a 1x1x1 projection with the stride, and batch
norm, when the shape changes).

Weights come in two published layouts (read from the file's keys; :func:`load_state`):

* ACAR-Net's ``.pth.tar``: a state dict (or ``{"state_dict": ...}``) with the backbone's
  keys (``slow_conv1.weight``, ``fast_res3.0.conv2.weight``, ``Tconv2.0.weight`` ...),
  bare (its ``pretrained/`` files) or under ``module.backbone.module.`` (its model-zoo
  files, which also hold the neck and head: ignored here, see ``acar import``);
* PySlowFast's ``.pyth``: ``{"model_state": ...}`` with ``s1.pathway0_stem.conv.weight``,
  ``s3.pathway1_res0.branch2.b.weight``, ``s2_fuse.conv_f2s.weight`` ... (``head.*``, the
  classifier, ignored).

The lateral connections (batch norm or not, kernel size) and each block's temporal kernel
are read from the file's shapes, so a file always runs the architecture it was trained
with; the Slow frame sampling is the registry entry's.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import ArtifactError
from .weights import read_tensors

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
SLOW_TEMPORAL = (1, 1, 3, 3)          # res2..res5 temporal kernel, Slow pathway
FAST_TEMPORAL = (3, 3, 3, 3)          # idem, Fast pathway
STRIDES = (1, 2, 2, 1)                # res5: stride 1 ...
DILATIONS = (1, 1, 1, 2)              # ... and dilation 2 (stride 16, ACAR-Net)
STRIDE = 16
EPS = 1e-5

ACAR, PYSLOWFAST = "acar-net", "pyslowfast"


@dataclass(frozen=True)
class SlowFastConfig:
    depth: int = 50
    alpha: int = 4                    # frame-rate ratio Fast / Slow
    beta_inv: int = 8                 # channel ratio Slow / Fast
    fusion_kernel: int = 7
    fusion_bn: bool = True            # lateral: conv -> BN -> ReLU (else the conv alone)
    full_span: bool = True            # Slow frames: linspace over the clip (else ::alpha)
    temporal_blocks: tuple[tuple[int, ...], tuple[int, ...]] | None = None
                                      # (slow, fast) per stage: blocks with the temporal
                                      # kernel; None: all of them
    width: int = 64                   # Slow stem channels

    def blocks(self) -> tuple[int, int, int, int]:
        return DEPTHS[self.depth]

    def kernels(self, pathway: int, stage: int) -> list[int]:
        """Temporal kernel of each block of ``stage`` (0..3 = res2..res5)."""
        k = (SLOW_TEMPORAL, FAST_TEMPORAL)[pathway][stage]
        n = self.blocks()[stage]
        m = n if self.temporal_blocks is None else self.temporal_blocks[pathway][stage]
        return [k] * m + [1] * (n - m)


# ---- the layers ----------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """(B, cin, T, H, W) -> (B, 4 * planes, T, H / stride, W / stride)."""

    def __init__(self, cin: int, planes: int, kt: int, stride: int, dilation: int):
        super().__init__()
        cout = 4 * planes
        self.conv_a = nn.Conv3d(cin, planes, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn_a = nn.BatchNorm3d(planes, eps=EPS)
        self.conv_b = nn.Conv3d(planes, planes, (1, 3, 3), (1, stride, stride),
                                (0, dilation, dilation), (1, dilation, dilation), bias=False)
        self.bn_b = nn.BatchNorm3d(planes, eps=EPS)
        self.conv_c = nn.Conv3d(planes, cout, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(cout, eps=EPS)
        self.proj: nn.Conv3d | None = None
        self.proj_bn: nn.BatchNorm3d | None = None
        if stride != 1 or cin != cout:
            self.proj = nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False)
            self.proj_bn = nn.BatchNorm3d(cout, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = F.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        short = x if self.proj is None else self.proj_bn(self.proj(x))
        return F.relu(y + short)


class Stem(nn.Module):
    """(B, 3, T, H, W) -> (B, cout, T, H/4, W/4): conv (kt, 7, 7) /2, BN, ReLU, max /2."""

    def __init__(self, cout: int, kt: int):
        super().__init__()
        self.conv = nn.Conv3d(3, cout, (kt, 7, 7), (1, 2, 2), (kt // 2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))


class Fuse(nn.Module):
    """Fast (B, c, T, H, W) -> (B, 2c, T / alpha, H, W), to concatenate to the Slow map."""

    def __init__(self, c: int, kernel: int, alpha: int, bn: bool):
        super().__init__()
        self.conv = nn.Conv3d(c, 2 * c, (kernel, 1, 1), (alpha, 1, 1), (kernel // 2, 0, 0),
                              bias=False)
        self.bn = nn.BatchNorm3d(2 * c, eps=EPS) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.bn is None else F.relu(self.bn(x))


class SlowFast(nn.Module):
    """The trunk: (B, 3, T, H, W) normalised -> (B, 2304, 1, H/16, W/16) (R50 and R101)."""

    def __init__(self, cfg: SlowFastConfig = SlowFastConfig()):
        super().__init__()
        self.cfg = cfg
        w, b = cfg.width, cfg.beta_inv
        self.slow_stem = Stem(w, 1)
        self.fast_stem = Stem(w // b, 5)
        self.fuse = nn.ModuleList([Fuse(w // b, cfg.fusion_kernel, cfg.alpha, cfg.fusion_bn)])
        self.slow = nn.ModuleList()
        self.fast = nn.ModuleList()
        cin_s, cin_f = w + 2 * (w // b), w // b
        for stage in range(4):
            planes = w * 2 ** stage
            self.slow.append(self._stage(cin_s, planes, cfg.kernels(0, stage), stage))
            self.fast.append(self._stage(cin_f, planes // b, cfg.kernels(1, stage), stage))
            cin_f = 4 * planes // b
            cin_s = 4 * planes + 2 * cin_f
            if stage < 3:
                self.fuse.append(Fuse(cin_f, cfg.fusion_kernel, cfg.alpha, cfg.fusion_bn))
        self.channels = 4 * w * 8 + 4 * w * 8 // b                 # 2048 + 256

    @staticmethod
    def _stage(cin: int, planes: int, kernels: list[int], stage: int) -> nn.Sequential:
        blocks = []
        for i, kt in enumerate(kernels):
            blocks.append(Bottleneck(cin if i == 0 else 4 * planes, planes, kt,
                                     STRIDES[stage] if i == 0 else 1, DILATIONS[stage]))
        return nn.Sequential(*blocks)

    def slow_frames(self, t: int) -> torch.Tensor:
        """Indices of the Slow pathway's frames among the clip's ``t``."""
        n = t // self.cfg.alpha
        if self.cfg.full_span:
            return torch.linspace(0, t - 1, n).long()
        return torch.arange(0, t, self.cfg.alpha)[:n]

    def pathways(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) -> Slow (B, 2048, T/alpha, H/16, W/16), Fast (B, 256, T, ...)."""
        t = x.shape[2]
        if t % self.cfg.alpha or t < self.cfg.alpha:
            raise ValueError(f"SlowFast needs a clip of a multiple of {self.cfg.alpha} "
                             f"frames, got {t}")
        slow = self.slow_stem(x.index_select(2, self.slow_frames(t).to(x.device)))
        fast = self.fast_stem(x)
        for stage in range(4):
            slow = torch.cat([slow, self.fuse[stage](fast)], dim=1)
            slow, fast = self.slow[stage](slow), self.fast[stage](fast)
        return slow, fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slow, fast = self.pathways(x)
        return torch.cat([slow.mean(dim=2, keepdim=True), fast.mean(dim=2, keepdim=True)],
                         dim=1)                                   # (B, 2304, 1, h, w)


# ---- the two published key layouts ---------------------------------------------------------

_BLOCK = re.compile(r"(slow|fast)\.(\d+)\.(\d+)\.(\w+)\.(\w+)$")
_ACAR_BLOCK = {"conv_a": "conv1", "bn_a": "bn1", "conv_b": "conv2", "bn_b": "bn2",
               "conv_c": "conv3", "bn_c": "bn3", "proj": "downsample.0",
               "proj_bn": "downsample_bn"}
_PYSF_BLOCK = {"conv_a": "branch2.a", "bn_a": "branch2.a_bn", "conv_b": "branch2.b",
               "bn_b": "branch2.b_bn", "conv_c": "branch2.c", "bn_c": "branch2.c_bn",
               "proj": "branch1", "proj_bn": "branch1_bn"}


def official_key(key: str, fmt: str, fusion_bn: bool = True) -> str:
    """The name of acar's state-dict ``key`` in a published layout (``fmt``)."""
    path = _BLOCK.match(key)
    if path:
        pathway, stage, block, layer, leaf = path.groups()
        if fmt == ACAR:
            return f"{pathway}_res{int(stage) + 1}.{block}.{_ACAR_BLOCK[layer]}.{leaf}"
        p = 0 if pathway == "slow" else 1
        return f"s{int(stage) + 2}.pathway{p}_res{block}.{_PYSF_BLOCK[layer]}.{leaf}"
    stem = re.match(r"(slow|fast)_stem\.(conv|bn)\.(\w+)$", key)
    if stem:
        pathway, layer, leaf = stem.groups()
        if fmt == ACAR:
            return f"{pathway}_{layer}1.{leaf}"
        return f"s1.pathway{0 if pathway == 'slow' else 1}_stem.{layer}.{leaf}"
    fuse = re.match(r"fuse\.(\d)\.(conv|bn)\.(\w+)$", key)
    if fuse:
        i, layer, leaf = fuse.groups()
        if fmt == ACAR:
            sub = ("0." if layer == "conv" else "1.") if fusion_bn else ""
            return f"Tconv{int(i) + 1}.{sub}{leaf}"
        return f"s{int(i) + 1}_fuse.{'conv_f2s' if layer == 'conv' else 'bn'}.{leaf}"
    raise KeyError(key)


def official_state_dict(net: SlowFast, fmt: str) -> dict[str, torch.Tensor]:
    """``net``'s weights under the names of a published layout (for tests and export)."""
    return {official_key(k, fmt, net.cfg.fusion_bn): v
            for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


_PREFIXES = ("module.backbone.module.", "backbone.module.", "module.")
_IGNORED = ("module.neck.", "module.head.", "neck.", "head.")   # heads: not the backbone's


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """``(backbone state dict with the prefixes dropped, its layout)`` of a weights file."""
    state = read_tensors(path)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_IGNORED) or key.endswith("num_batches_tracked"):
            continue
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    if any(k.startswith("s1.pathway0_stem.") for k in out):
        return out, PYSLOWFAST
    if any(k.startswith("slow_conv1.") for k in out):
        return out, ACAR
    raise ArtifactError(path, "neither ACAR-Net's (slow_conv1.weight ...) nor PySlowFast's "
                        f"(s1.pathway0_stem.conv.weight ...) SlowFast layout; keys: "
                        f"{sorted(out)[:3]}")


def config_of(state: dict[str, torch.Tensor], fmt: str, base: SlowFastConfig,
              path: Path) -> SlowFastConfig:
    """``base`` with the lateral connections and temporal kernels the file was made with."""
    conv = "Tconv1.0.weight" if fmt == ACAR else "s1_fuse.conv_f2s.weight"
    if fmt == ACAR and conv not in state:
        conv = "Tconv1.weight"
    if conv not in state:
        raise ArtifactError(path, f"weights lack {conv}")
    fusion_bn = conv != "Tconv1.weight"
    probe = replace(base, fusion_bn=fusion_bn, fusion_kernel=int(state[conv].shape[2]),
                    temporal_blocks=None)
    counts: list[list[int]] = [[], []]
    for p, pathway in enumerate(("slow", "fast")):
        for stage in range(4):
            default = sum(k > 1 for k in probe.kernels(p, stage))
            ks = []
            for b in range(probe.blocks()[stage]):
                key = official_key(f"{pathway}.{stage}.{b}.conv_a.weight", fmt, fusion_bn)
                if key not in state:            # reported by load_state
                    ks = []
                    break
                ks.append(int(state[key].shape[2]))
            m = sum(k > 1 for k in ks) if ks else default
            if any(k > 1 for k in ks[m:]):
                raise ArtifactError(path, f"{pathway} res{stage + 2}: temporal kernels {ks}: "
                                    "not the first blocks of the stage")
            counts[p].append(m)
    defaults = [[sum(k > 1 for k in probe.kernels(p, s)) for s in range(4)] for p in range(2)]
    if counts == defaults:
        return probe
    return replace(probe, temporal_blocks=(tuple(counts[0]), tuple(counts[1])))


def load_state(net: SlowFast, state: dict[str, torch.Tensor], fmt: str, path: Path) -> None:
    """Copy a published layout's tensors into ``net``; a key missing, unexpected or of the
    wrong shape is a one-line error naming them."""
    table = {official_key(k, fmt, net.cfg.fusion_bn): k for k in net.state_dict()
             if not k.endswith("num_batches_tracked")}
    missing = sorted(set(table) - set(state))
    unexpected = sorted(set(state) - set(table))
    if missing or unexpected:
        raise ArtifactError(path, f"{fmt} SlowFast-{net.cfg.depth} weights: "
                            f"{len(missing)} missing keys {missing[:4]}, "
                            f"{len(unexpected)} unexpected keys {unexpected[:4]}")
    own = net.state_dict()
    for name, key in table.items():
        if tuple(state[name].shape) != tuple(own[key].shape):
            raise ArtifactError(path, f"{name}: shape {tuple(state[name].shape)}, "
                                f"SlowFast-{net.cfg.depth} needs {tuple(own[key].shape)}")
    net.load_state_dict({table_key: state[name] for name, table_key in table.items()},
                        strict=False)


# ---- weights by name -----------------------------------------------------------------------

@dataclass(frozen=True)
class PublishedWeights:
    file: str                          # the file's name in the cache
    url: str                           # where it downloads from (Google Drive: ACAR-Net)
    source: str


def _gdrive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


# ACAR-Net's pretrained/ and model_zoo/ files (Google Drive folders named in its README)
PUBLISHED: dict[int, dict[str, PublishedWeights]] = {
    50: {"kinetics400": PublishedWeights("SLOWFAST_R50_K400.pth.tar",
                                         _gdrive("1kQO_dnM9JjV3sBtvowXqQa6d0xcxn5rs"),
                                         "ACAR-Net pretrained/ (from PySlowFast)"),
         "ava-acar": PublishedWeights("AVA_SLOWFAST_R50_ACAR_HR2O.pth.tar",
                                      _gdrive("12vGZoWElxB-Lhn_sGz1aRMqAacexgKtm"),
                                      "ACAR-Net model zoo, AVA v2.2, 27.74 mAP")},
    101: {"kinetics700": PublishedWeights("SLOWFAST_R101_K700.pth.tar",
                                          _gdrive("1qDdAntE5Onh7btniftOL8MrbsD7OIqj4"),
                                          "ACAR-Net pretrained/"),
          "ava-acar": PublishedWeights("AVA_SLOWFAST_R101_ACAR_HR2O_DEPTH1.pth.tar",
                                       _gdrive("1d9UdvwS0HR-h84j_z4JbRWwEbITSt_FN"),
                                       "ACAR-Net model zoo, AVA v2.2, 31.72 mAP"),
          "ava-kinetics-acar": PublishedWeights(
              "AVA-Kinetics_SLOWFAST_R101_ACAR_HR2O_DEPTH1.pth.tar",
              _gdrive("1c-6o-s5ix2dD1rN2m51FPtfKv8fTPy8m"),
              "ACAR-Net model zoo, AVA-Kinetics v1.0, 33.70 mAP")},
}
DEFAULT_WEIGHTS = {50: "kinetics400", 101: "kinetics700"}


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve(depth: int, weights: str | None) -> tuple[Path, str]:
    """A weights name (cached, else downloaded) or a path -> ``(file, identity)``; the
    identity is ``file:NAME:SHA16`` either way, so a store made with ``--weights ava-acar``
    and one made with the path of the same file are interchangeable."""
    names = PUBLISHED[depth]
    name = weights or DEFAULT_WEIGHTS[depth]
    if name in names:
        pub = names[name]
        path = cache_dir() / pub.file
        if not path.is_file():
            if os.environ.get("ACAR_OFFLINE"):
                raise ArtifactError(name, f"{pub.file} is not in {cache_dir()} (offline); "
                                    f"download it from {pub.url} or pass --weights PATH")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(pub.url, str(path), progress=False)
            except Exception as err:  # noqa: BLE001 - network errors of any kind
                raise ArtifactError(name, f"cannot download {pub.file} ({err.__class__.__name__}"
                                    f"); put it in {cache_dir()} or pass --weights PATH"
                                    ) from None
        return path, f"file:{path.name}:{_digest(path)}"    # as when given as a path
    path = Path(weights)
    if not path.is_file():
        raise ArtifactError(weights, f"neither a weights name ({sorted(names)}) nor an "
                            "existing weights file")
    return path, f"file:{path.name}:{_digest(path)}"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def build(cfg: SlowFastConfig, weights: str | None = None, random_init: bool = False,
          seed: int = 0) -> tuple[SlowFast, str]:
    """``(SlowFast in eval mode, weights identity)``: published weights by name, a file of
    either layout, or an explicit seeded random init."""
    if random_init:
        if weights is not None:
            raise ArtifactError(weights, "--random-init and --weights exclude each other")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SlowFast(cfg)
        return net.eval(), f"random-init(seed={seed})"
    path, identity = resolve(cfg.depth, weights)
    net = from_file(cfg, path)
    return net, identity


def from_file(cfg: SlowFastConfig, path: Path) -> SlowFast:
    state, fmt = read_state(path)
    net = SlowFast(config_of(state, fmt, cfg, path))
    load_state(net, state, fmt, path)
    return net.eval()


def named_blocks(net: SlowFast) -> Iterator[tuple[str, nn.Module]]:
    for name, module in net.named_modules():
        if isinstance(module, Bottleneck):
            yield name, module
