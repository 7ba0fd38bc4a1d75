"""The SlowFast fixtures and the bench's input and weight formulas, shared by the tests of
``tests/backbones`` (the same formulas as ``bench/slowfast_reference.py``)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEYS = json.loads((FIXTURES / "slowfast_keys.json").read_text())
MAPS = dict(np.load(FIXTURES / "slowfast_reference.npz"))
CASES = {"acar_r50": ("acar-net", "slowfast_r50"),
         "pyslowfast_r50": ("pyslowfast", "slowfast_r50"),
         "acar_r101": ("acar-net", "slowfast_r101")}
SMALL = (8, 32, 48)


def synthetic_input(t: int, h: int, w: int) -> np.ndarray:
    """(1, 3, t, h, w) in [-1, 1]; the formula of bench/slowfast_reference.py."""
    cc, tt, yy, xx = np.meshgrid(np.arange(3), np.arange(t), np.arange(h), np.arange(w),
                                 indexing="ij")
    x = np.sin(0.37 * tt + 0.11 * yy * (cc + 1) + 0.07 * xx + 1.3 * cc) \
        * np.cos(0.05 * (xx - yy) + 0.2 * tt)
    return x[None].astype(np.float32)


def synthetic_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The bench's weights: a generator seeded by the official key name."""
    g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
    if leaf == "weight":
        return 0.5 + 0.5 * torch.rand(shape, generator=g)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


