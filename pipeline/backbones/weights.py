"""Reading a weights file: one place for the checks every loader needs.

A weights file is whatever ``torch.save`` wrote: a bare state dict, or a checkpoint dict that
wraps it (``state_dict``, ``model_state``, ``model``).  :func:`read_tensors` returns the state
dict, or raises a one-line :class:`ArtifactError` naming the file: not found, not loadable
(pickle or zip errors; ``weights_only`` refuses arbitrary code), not a dict of tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts import ArtifactError

WRAPPERS = ("state_dict", "model_state", "model")


def read_tensors(path: Path, *, noun: str = "weights file", wrappers: tuple[str, ...] = WRAPPERS,
                 tensors_only: bool = True) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (each of ``wrappers``, in order, that holds a dict is unwrapped).

    ``tensors_only``: every value must be a tensor (else the file is refused); when false,
    the other values (a step count, a config) are dropped."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, f"{noun} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle / zip errors
        raise ArtifactError(path, f"not a loadable {noun} ({err.__class__.__name__})"
                            ) from None
    for key in wrappers:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ArtifactError(path, "not a state dict")
    if not tensors_only:
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(path, "not a state dict of tensors")
    return state
