"""Stage configuration: dataclasses filled from ``stages.yaml`` plus CLI overrides.

Each stage module defines its own ``@dataclass`` config; this module only loads them.
``stages.yaml`` has one top-level section per stage (``detect:``, ``extract:``…), which
is also what ``dvc.yaml`` lists under ``params:``, so DVC reruns a stage exactly when
its section changes.  A CLI flag that is given overrides the file; one that is omitted
(``None``) leaves the file's value (or the dataclass default).

Loading checks the whole file, whichever stage asks (:func:`check_params`): a misspelled
section, head, key or head hyper-parameter anywhere is a one-line :class:`ArtifactError`,
and so are coupled parameters that disagree (:data:`COUPLED`).  Every numeric parameter
(and the few with a fixed set of values) is checked against :data:`RULES`, in the file
and in the flags alike: ``train.batch_size must be >= 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
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


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a parameter may be: an ``int`` or ``float`` (finite; a bool is neither) within
    ``[lo, hi]`` (``lo_open``/``hi_open``: excluded), or one of ``choices``; ``null``: None
    is allowed (the stage picks); ``items``: the rule is for each item of a list."""

    kind: str = "float"                  # int | float | str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False
    items: bool = False
    choices: tuple[str, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """None if ``value`` is allowed, else what is wrong with it ("must be >= 1")."""
        if value is None:
            return None if self.null else "must be set"
        if self.items:
            if not isinstance(value, (list, tuple)):
                return "must be a list"
            item = dataclasses.replace(self, items=False, null=False)
            for v in value:
                if (p := item.problem(v)) is not None:
                    return f"items {p}"
            return None
        if self.choices is not None:
            if value not in self.choices:
                return f"must be one of {', '.join(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {'an integer' if self.kind == 'int' else 'a number'}"
        if self.kind == "int" and not isinstance(value, int):
            return "must be an integer"
        if not math.isfinite(value):
            return "must be a finite number"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _int(lo: float | None = None, **kw: Any) -> Rule:
    return Rule("int", lo, **kw)


POSITIVE = _int(1)                       # counts and sizes
COUNT = _int(0)                          # may be zero (workers, seeds)
FRACTION = Rule("float", 0, 1)           # scores, thresholds, probabilities
ANY_INT = _int()

# Section ("bank" for bank.<kind>, "train" also for heads.<name>) -> field -> Rule.  Fields
# not listed (strings, flags, paths, hparams: checked by the head's config) are free.
RULES: dict[str, dict[str, Rule]] = {
    "synth": {"seed": COUNT, "num_train": POSITIVE, "num_val": COUNT, "duration": POSITIVE,
              "fps": POSITIVE, "width": _int(8), "height": _int(8), "max_people": POSITIVE,
              "label_noise": FRACTION},
    "detect": {"classes": _int(0, items=True), "min_score": FRACTION, "iou": FRACTION,
               "imgsz": _int(32), "max_det": POSITIVE, "batch_size": POSITIVE,
               "keyframe_interval": POSITIVE, "time_offset": ANY_INT,
               "num_workers": _int(0, null=True)},
    "extract": {"seed": COUNT, "clip_frames": _int(1, null=True),
                "clip_stride": _int(1, null=True),
                "clip_fps": Rule("float", 0, lo_open=True, null=True),
                "time_offset": Rule("float", null=True), "short_side": _int(8),
                "scales": _int(8, items=True), "pad_multiple": _int(1, null=True),
                "batch_size": POSITIVE, "num_workers": _int(0, null=True),
                "segment_keyframes": POSITIVE, "piece_frames": POSITIVE,
                "preset": Rule("str", null=True, choices=(
                    "acar-net-r50", "acar-net-r101", "i3d-kinetics400", "hoghof-toy"))},
    "bank": {"kind": Rule("str", choices=("lfb", "acfb")),
             "pool": Rule("str", choices=("none", "2x2", "4x4")),
             "det_threshold": FRACTION, "batch_size": POSITIVE},
    "train": {"epochs": POSITIVE, "batch_size": POSITIVE, "lr": Rule("float", 0, lo_open=True),
              "momentum": FRACTION, "weight_decay": Rule("float", 0),
              "warmup_epochs": Rule("float", 0), "warmup_factor": FRACTION,
              "lr_steps": Rule("float", 0, 1, items=True),
              "lr_gamma": Rule("float", 0, lo_open=True),
              "det_threshold": FRACTION, "match_iou": FRACTION,
              "jitter": Rule("float", 0, 0.5, hi_open=True), "seed": COUNT,
              "cache": Rule("str", choices=("auto", "memory", "disk")),
              "cache_max_gb": Rule("float", 0), "num_workers": COUNT},
    "eval": {"det_threshold": FRACTION, "batch_size": POSITIVE},
    "viz": {"threshold": FRACTION, "top_k": POSITIVE, "text_scale": Rule("float", 0, lo_open=True),
            "chunk": POSITIVE},
    "demo": {"classes": _int(0, items=True), "det_threshold": FRACTION, "threshold": FRACTION,
             "top_k": POSITIVE, "keyframe_interval": POSITIVE, "time_offset": ANY_INT},
}


def rules_of(section: str) -> dict[str, Rule]:
    """The :data:`RULES` of a params section (``bank.lfb``, ``heads.acar``...)."""
    top = section.split(".")[0]
    return RULES.get("train" if top == "heads" else top, {})


def check_values(section: str, values: dict[str, Any], where: Any = DEFAULT_PARAMS) -> None:
    """Each value of ``values`` (fields of ``section``) obeys its :data:`RULES`, else a
    one-line :class:`ArtifactError`: ``<where>: train.batch_size must be >= 1, got 0``.
    ``where``: the file, or a callable field -> what to name (a flag)."""
    rules = rules_of(section)
    for key, value in values.items():
        rule = rules.get(key)
        if rule is None or (p := rule.problem(value)) is None:
            continue
        name = where(key) if callable(where) else where
        raise ArtifactError(name, f"{section}.{key} {p}, got {value!r}")
    if "head" in values and section.split(".")[0] in ("train", "heads"):
        from .models import HEADS

        if values["head"] not in HEADS:
            name = where("head") if callable(where) else where
            raise ArtifactError(name, f"unknown head {values['head']!r}; known: "
                                      f"{', '.join(HEADS)}")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


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
                check_values(top, node, path)
            continue
        for sub, subnode in node.items():
            section = f"{top}.{sub}"
            if sub not in subs[top]:
                raise ArtifactError(path, f"unknown section '{section}'; known: "
                                          f"{', '.join(f'{top}.{s}' for s in subs[top])}")
            if sections is None or section in sections:
                _check_keys(path, section, _mapping(path, section, subnode), _fields(section))
                check_values(section, subnode or {}, path)
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
        check_values(section, node, path)
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
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    layer = getattr(cls, "preset_layer", None)   # extract.preset: defaults < preset < keys
    values = layer(values, flags, path, _flag) if layer else {**values, **flags}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ArtifactError(path, f"unknown {cls.__name__} parameter(s) {unknown}; "
                                  f"known: {sorted(names)}")
    first = section if isinstance(section, str) else section[0]
    check_values(first, flags, _flag)       # the file's values were checked above
    cfg = cls(**values)
    if getattr(cfg, "nesterov", False) and getattr(cfg, "momentum", None) == 0:
        raise ArtifactError(_flag("momentum") if "momentum" in flags else path,
                            f"{first}.momentum must be > 0 with nesterov: true, got 0")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
