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

from . import ArtifactError
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
    """Read and check a ``metrics.json``; a missing or malformed file is an ArtifactError."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ArtifactError(path, "metrics file not found") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(path, f"invalid JSON ({err.msg})", err.lineno) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(path, f"cannot read metrics ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ArtifactError(path, "metrics must be a JSON object")
    if "mAP" not in data or not _is_ap(data["mAP"]):
        raise ArtifactError(path, "'mAP' must be a number or null (an AP in [0, 1]), got "
                                  f"{data.get('mAP')!r}")
    for key in ("per_class", "per_superclass"):
        if not isinstance(data.get(key), dict):
            raise ArtifactError(path, f"'{key}' must be an object")
    bad = [k for k, v in data["per_superclass"].items() if not _is_ap(v)]
    if bad:
        raise ArtifactError(path, f"per_superclass '{bad[0]}' must be a number or null (an AP "
                                  f"in [0, 1]), got {data['per_superclass'][bad[0]]!r}")
    return data


def _is_ap(v) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                         and 0 <= v <= 1)    # NaN fails too
