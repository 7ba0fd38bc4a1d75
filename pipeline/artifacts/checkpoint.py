"""Checkpoints: one ``.pt`` file that rebuilds a trained head on its own.

Keys::

    format: "acar-checkpoint/1"
    head: str                 # name in pipeline.models.HEADS
    hparams: dict             # the head's spec: dataclasses.asdict(pipeline.models.head_config)
                              # (every hyper-parameter; checkpoints written before typed
                              # specs hold only the keys that were set, defaults fill the rest)
    in_channels: int, num_classes: int
    labelmap: LabelMap.to_dict()
    feature_spec: dict        # FeatureSpec.to_dict() of the features it was trained on
    state_dict: dict[str, Tensor]
    train: dict               # train config + progress (epoch, optimizer state) for resume;
                              # complete: False in an unfinished run's resume state

A finished model is the only thing ``train`` writes at its ``--out`` path; the resume
state of an unfinished run lies beside it (:func:`partial_path`, ``m.pt.partial``), and
:func:`load_checkpoint` refuses an unfinished checkpoint wherever it lies (every reader:
eval, bank, demo, ``--init``), unless asked for one (``train --resume``).

Everything but tensors is plain Python data, so ``torch.load(weights_only=True)`` works.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from . import ArtifactError
from .atomic import atomic_path

FORMAT = "acar-checkpoint/1"
REQUIRED = ("head", "hparams", "in_channels", "num_classes", "labelmap", "feature_spec",
            "state_dict")


def partial_path(path: str | os.PathLike) -> Path:
    """Where an unfinished training run keeps its per-epoch resume state: ``<path>.partial``."""
    return Path(str(path) + ".partial")


def is_complete(ckpt: dict) -> bool:
    """False for the resume state of an unfinished run (a checkpoint without training
    progress, e.g. made by hand, counts as finished)."""
    train = ckpt.get("train")
    return not isinstance(train, dict) or train.get("complete", True) is not False


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint is missing {missing}")
    buf = io.BytesIO()              # not the temporary file: torch.save names its archive
    torch.save({"format": FORMAT, **ckpt}, buf)   # after the file, so the bytes would vary
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: str | os.PathLike, unfinished: bool = False) -> dict:
    """The checkpoint at ``path``; an unfinished one (:func:`is_complete`) is an error
    naming ``--resume`` unless ``unfinished``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except Exception as err:  # torch raises many kinds for a bad file
        raise ArtifactError(path, f"not a readable checkpoint ({err.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ArtifactError(path, f"not an acar checkpoint (expected format {FORMAT})")
    if not unfinished and not is_complete(ckpt):
        train = ckpt["train"]
        epochs = (train.get("config") or {}).get("epochs", "?")
        raise ArtifactError(path, f"an unfinished training run (epoch {train.get('epoch')} of "
                                  f"{epochs}), not a model: finish it with `acar train "
                                  "--resume` (same flags)")
    return ckpt
