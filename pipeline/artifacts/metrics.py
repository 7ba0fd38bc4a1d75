"""``metrics.json`` and ``per_class.json``: the evaluation summary and its per-class APs.

``metrics.json`` holds what one compares at a glance (``dvc metrics show``, ``dvc exp show``:
a handful of columns, whatever the number of classes)::

    {"mAP": float | null,
     "per_superclass": {"<superclass>": float | null},   # the report's families
     "keyframes": int,                                    # GT keyframes scored
     "boxes": int}                                        # distinct GT person boxes on them

``per_class.json``, beside it (:func:`per_class_path`), keeps every class in full::

    {"<action_id>": {"name": str, "ap": float | null, "num_gt": int}}

In memory (``EvalResult.metrics``, what ``acar eval`` returns) both are one dict, the
summary plus ``"per_class"``; :func:`write_metrics` splits it, :func:`read_eval` joins the
two files again.  ``keyframes`` and ``boxes`` are optional on reading (files written before
they existed).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import ArtifactError
from .atomic import write_text_atomic

SUMMARY_KEYS = ("mAP", "per_superclass", "keyframes", "boxes")
COUNTS = ("keyframes", "boxes")


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def per_class_path(metrics_path: str | os.PathLike) -> Path:
    """Where the per-class APs of ``metrics_path`` go: ``metrics.json`` -> ``per_class.json``,
    ``acar_metrics.json`` -> ``acar_per_class.json``, ``m.json`` -> ``m.per_class.json``."""
    p = Path(metrics_path)
    stem = p.name[:-len(p.suffix)] if p.suffix else p.name
    if stem.endswith("metrics"):
        return p.with_name(stem[:-len("metrics")] + "per_class" + p.suffix)
    return p.with_name(stem + ".per_class" + (p.suffix or ".json"))


def split_metrics(metrics: dict) -> tuple[dict, dict]:
    """``(summary, per_class)`` of an in-memory metrics dict."""
    summary = {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}
    summary.update({k: v for k, v in metrics.items() if k not in summary and k != "per_class"})
    return _clean(summary), _clean(metrics.get("per_class", {}))


def write_metrics(metrics: dict, path: str | os.PathLike,
                  per_class: str | os.PathLike | None = None) -> None:
    """Write the summary to ``path`` and the per-class APs to ``per_class`` (default
    :func:`per_class_path` of ``path``), each atomically."""
    summary, classes = split_metrics(metrics)
    write_text_atomic(per_class if per_class is not None else per_class_path(path),
                      json.dumps(classes, indent=2, allow_nan=False) + "\n")
    write_text_atomic(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")


def _load(path: str | os.PathLike, what: str):
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ArtifactError(path, f"{what} file not found") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(path, f"invalid JSON ({err.msg})", err.lineno) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(path, f"cannot read {what} ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ArtifactError(path, f"{what} must be a JSON object")
    return data


def read_metrics(path: str | os.PathLike) -> dict:
    """Read and check a ``metrics.json`` (the summary); a missing or malformed file is an
    ArtifactError."""
    data = _load(path, "metrics")
    if "mAP" not in data or not _is_ap(data["mAP"]):
        raise ArtifactError(path, "'mAP' must be a number or null (an AP in [0, 1]), got "
                                  f"{data.get('mAP')!r}")
    if not isinstance(data.get("per_superclass"), dict):
        raise ArtifactError(path, "'per_superclass' must be an object")
    bad = [k for k, v in data["per_superclass"].items() if not _is_ap(v)]
    if bad:
        raise ArtifactError(path, f"per_superclass '{bad[0]}' must be a number or null (an AP "
                                  f"in [0, 1]), got {data['per_superclass'][bad[0]]!r}")
    for key in COUNTS:
        v = data.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ArtifactError(path, f"'{key}' must be a non-negative integer")
    return data


def read_per_class(path: str | os.PathLike) -> dict[str, dict]:
    """Read and check a ``per_class.json``: action id -> ``{name, ap, num_gt}``."""
    data = _load(path, "per-class APs")
    for a, row in data.items():
        if not (isinstance(row, dict) and isinstance(row.get("name"), str)
                and _is_ap(row.get("ap", "")) and isinstance(row.get("num_gt"), int)):
            raise ArtifactError(path, f"class '{a}' must be {{name: str, ap: number or null, "
                                      "num_gt: int}")
    return data


def read_eval(path: str | os.PathLike) -> dict:
    """``metrics.json`` and its ``per_class.json`` as one dict (the in-memory form)."""
    return {**read_metrics(path), "per_class": read_per_class(per_class_path(path))}


def _is_ap(v) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                         and 0 <= v <= 1)    # NaN fails too
