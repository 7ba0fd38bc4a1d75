"""Stage configuration: dataclasses filled from ``stages.yaml`` plus CLI overrides.

Each stage module defines its own ``@dataclass`` config; this module only loads them.
``stages.yaml`` has one top-level section per stage (``detect:``, ``extract:``…), which
is also what ``dvc.yaml`` lists under ``params:``, so DVC reruns a stage exactly when
its section changes.  A CLI flag that is given overrides the file; one that is omitted
(``None``) leaves the file's value (or the dataclass default).

Loading checks the whole file, whichever stage asks (:func:`check_params`): a misspelled
section, head, key or head hyper-parameter anywhere is a one-line :class:`ArtifactError`,
and so are coupled parameters that disagree (:data:`COUPLED`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .artifacts import ArtifactError

T = TypeVar("T")
DEFAULT_PARAMS = "stages.yaml"

# Parameters that must agree, as (key, key it must equal, why).  acfb reads the bank that
# the trained acar makes (bank_acfb), with that bank's pooling.  Checked when the params
# file configures the acfb head; a key absent from the file has its dataclass default.
COUPLED = [
    ("heads.acfb.hparams.pool", "bank.acfb.pool", "acfb reads the bank's pooled maps"),
    ("heads.acfb.hparams.hidden_dim", "heads.acar.hparams.hidden_dim",
     "acfb reads the bank that the trained acar makes"),
    ("heads.acfb.hparams.reduce_dim", "heads.acar.hparams.reduce_dim",
     "acfb reads the bank that the trained acar makes"),
]


# Section of the params file -> the config dataclass it fills, as "module:Class".  The
# classes are imported when a section is checked or loaded, not with this module: scoring a
# CSV (`acar eval --predictions`) loads no params, so imports no torch.  `heads` holds one
# section per head of pipeline.models.HEADS, each a TrainConfig merged over `train`.
SECTIONS: dict[str, str] = {
    "synth": "pipeline.synth:SynthConfig",
    "detect": "pipeline.detect:DetectConfig",
    "extract": "pipeline.extract:ExtractConfig",
    "bank.lfb": "pipeline.bank:BankConfig",
    "bank.acfb": "pipeline.bank:BankConfig",
    "train": "pipeline.train:TrainConfig",
    "heads": "pipeline.train:TrainConfig",
    "eval": "pipeline.evaluate:EvalConfig",
    "report": "pipeline.report:ReportConfig",
    "viz": "pipeline.viz:VizConfig",
    "demo": "pipeline.demo:DemoConfig",
}


def config_class(section: str) -> type:
    """The dataclass of ``section`` (``heads.<name>``: TrainConfig), imported now.

    (Importing every stage to check the whole file does not make a stage depend on the
    others' code: its outputs depend only on its own section.)
    """
    key = "heads" if section.startswith("heads.") else section
    if key not in SECTIONS:
        raise KeyError(f"no params section '{section}'")
    module, _, name = SECTIONS[key].partition(":")
    return getattr(importlib.import_module(module), name)


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


def _mapping(path: object, where: str, node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ArtifactError(path, f"section '{where}' must be a mapping")
    return node


def _get(data: dict[str, Any], dotted: str) -> Any:
    """``data['a']['b']`` for ``'a.b'``; None where a level is missing."""
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _check_keys(path: object, section: str, node: dict[str, Any], names: list[str]) -> None:
    for key in node:
        if key not in names:
            raise ArtifactError(path, f"unknown key '{key}' in section '{section}'; "
                                      f"known: {', '.join(names)}")


def _hparam(head: str, hparams: dict[str, Any], key: str) -> Any:
    """One hyper-parameter of ``head`` as a run would use it: the file's, else the default."""
    from .models import HEADS, head_config

    cfg = head_config(head, hparams)
    if dataclasses.is_dataclass(cfg):
        return getattr(cfg, key)
    if key in cfg:                      # head_config returning the checked dict
        return cfg[key]
    return inspect.signature(HEADS[head].__init__).parameters[key].default


def _value(data: dict[str, Any], dotted: str) -> Any:
    """The value a run would use for ``dotted`` (a ``COUPLED`` key)."""
    if ".hparams." in dotted:
        section, key = dotted.split(".hparams.")
        return _hparam(section.split(".", 1)[1], _get(data, f"{section}.hparams") or {}, key)
    section, key = dotted.rsplit(".", 1)
    node = _get(data, section) or {}
    if key in node:
        return node[key]
    return {f.name: f.default for f in dataclasses.fields(config_class(section))}[key]


def check_params(data: dict[str, Any], path: object = DEFAULT_PARAMS,
                 sections: list[str] | None = None) -> None:
    """Every section, head, key and head hyper-parameter of ``data`` is known, and the
    :data:`COUPLED` parameters agree; else a one-line ``ArtifactError`` naming them.

    ``sections``: check only the section names and these sections' keys (cheap: imports
    only their dataclasses), e.g. for a ``--help``; None: all of it.
    """
    tops = list(dict.fromkeys(s.split(".")[0] for s in SECTIONS))
    subs = {top: [s.split(".", 1)[1] for s in SECTIONS if s.startswith(f"{top}.")]
            for top in tops}
    for top, node in data.items():
        if top not in tops:
            raise ArtifactError(path, f"unknown section '{top}'; known: {', '.join(tops)}")
        node = _mapping(path, top, node)
        if top == "heads":
            if sections is None:
                _check_heads(path, node)
            continue
        if not subs[top]:
            if sections is None or top in sections:
                _check_keys(path, top, node, _fields(top))
            continue
        for sub, subnode in node.items():
            section = f"{top}.{sub}"
            if sub not in subs[top]:
                raise ArtifactError(path, f"unknown section '{section}'; known: "
                                          f"{', '.join(f'{top}.{s}' for s in subs[top])}")
            if sections is None or section in sections:
                _check_keys(path, section, _mapping(path, section, subnode), _fields(section))
    if sections is None and _get(data, "heads.acfb") is not None:
        for key, other, why in COUPLED:
            a, b = _value(data, key), _value(data, other)
            if a != b:
                raise ArtifactError(path, f"{key} ({a!r}) must equal {other} ({b!r}): {why}")


def _fields(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class(section))]


def _check_heads(path: object, heads: dict[str, Any]) -> None:
    from .models import HEADS, head_config

    for name, node in heads.items():
        if name not in HEADS:
            raise ArtifactError(path, f"unknown head '{name}' in section 'heads'; "
                                      f"known: {', '.join(HEADS)}")
        section = f"heads.{name}"
        node = _mapping(path, section, node)
        _check_keys(path, section, node, [n for n in _fields(section) if n != "head"])
        try:
            head_config(name, _mapping(path, f"{section}.hparams", node.get("hparams")))
        except ValueError as err:
            raise ArtifactError(path, f"{section}.hparams: {err}") from None


def section_values(section: str | list[str], data: dict[str, Any],
                   path: object = DEFAULT_PARAMS) -> dict[str, Any]:
    """The keys ``data`` sets in ``section`` (later sections of a list update
    earlier ones, e.g. ``["train", "heads.acar"]``)."""
    values: dict[str, Any] = {}
    for sec in [section] if isinstance(section, str) else section:
        node = _get(data, sec)
        values.update(_mapping(path, sec, node))
    return values


def load_config(cls: type[T], section: str | list[str], params: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from ``params[section]`` then ``overrides`` (``None`` values ignored).

    ``section`` may be a list; later sections update earlier ones (for example
    ``["train", "heads.acar"]``: common train params, then per-head ones).  The whole
    params file is checked first (:func:`check_params`).
    """
    data = read_params(params)
    path = params or DEFAULT_PARAMS
    check_params(data, path)
    values = section_values(section, data, path)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ArtifactError(path, f"unknown {cls.__name__} parameter(s) {unknown}; "
                                  f"known: {sorted(names)}")
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
