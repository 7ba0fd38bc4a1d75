"""Stage configuration: dataclasses filled from ``stages.yaml`` plus CLI overrides.

Each stage module defines its own ``@dataclass`` config; this module only loads them.
``stages.yaml`` has one top-level section per stage (``detect:``, ``extract:``…), which
is also what ``dvc.yaml`` lists under ``params:``, so DVC reruns a stage exactly when
its section changes.  A CLI flag that is given overrides the file; one that is omitted
(``None``) leaves the file's value (or the dataclass default).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .artifacts import ArtifactError

T = TypeVar("T")
DEFAULT_PARAMS = "stages.yaml"


def read_params(path: str | os.PathLike | None) -> dict[str, Any]:
    """The whole params file as a dict; ``{}`` when ``path`` is None or absent by default."""
    if path is None:
        path = Path(DEFAULT_PARAMS)
        if not path.exists():
            return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ArtifactError(path, "params file not found") from None
    except yaml.YAMLError as err:
        raise ArtifactError(path, f"invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ArtifactError(path, "params file must be a mapping of stage sections")
    return data


def load_config(cls: type[T], section: str | list[str], params: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from ``params[section]`` then ``overrides`` (``None`` values ignored).

    ``section`` may be a list; later sections update earlier ones (for example
    ``["train", "heads.acar"]``: common train params, then per-head ones).
    """
    data = read_params(params)
    values: dict[str, Any] = {}
    for sec in [section] if isinstance(section, str) else section:
        node: Any = data
        for part in sec.split("."):
            node = (node or {}).get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            raise ArtifactError(params or DEFAULT_PARAMS, f"section '{sec}' must be a mapping")
        values.update(node)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ArtifactError(params or DEFAULT_PARAMS,
                            f"unknown {cls.__name__} parameter(s) {unknown}; "
                            f"known: {sorted(names)}")
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
