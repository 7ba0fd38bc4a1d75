"""``metrics.json``: the evaluation summary that DVC and outside checks read.

Exact keys::

    {"mAP": float,
     "per_class": {"<action_id>": {"name": str, "ap": float | null, "num_gt": int}},
     "per_superclass": {"<superclass>": float | null}}
"""

from __future__ import annotations

import json
import math
import os

from .atomic import write_text_atomic


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def write_metrics(metrics: dict, path: str | os.PathLike) -> None:
    write_text_atomic(path, json.dumps(_clean(metrics), indent=2, allow_nan=False) + "\n")


def read_metrics(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return json.load(fh)
