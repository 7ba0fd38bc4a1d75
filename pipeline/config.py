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
from collections.abc import Callable
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
    "synth": {"seed": COUNT, "num_train": POSITIVE, "num_val": COUNT, "duration": _int(2),
              "fps": POSITIVE, "width": _int(8), "height": _int(8), "max_people": POSITIVE,
              "label_noise": FRACTION},
    "detect": {"classes": _int(0, items=True), "det_score_thr": FRACTION, "iou": FRACTION,
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
    "bank": {"kind": Rule("str", choices=("lfb", "acfb", "memory")),
             "pool": Rule("str", choices=("none", "2x2", "4x4")),
             "det_score_thr": FRACTION, "batch_size": POSITIVE},
    "train": {"epochs": POSITIVE, "batch_size": POSITIVE, "lr": Rule("float", 0, lo_open=True),
              "momentum": FRACTION, "weight_decay": Rule("float", 0),
              "warmup_epochs": Rule("float", 0), "warmup_factor": FRACTION,
              "lr_steps": Rule("float", 0, 1, items=True),
              "lr_gamma": Rule("float", 0, lo_open=True),
              "det_score_thr": FRACTION, "match_iou": FRACTION,
              "jitter": Rule("float", 0, 0.5, hi_open=True), "seed": COUNT,
              "cache": Rule("str", choices=("auto", "memory", "disk")),
              "cache_max_gb": Rule("float", 0), "num_workers": COUNT,
              "train": Rule("str", choices=("all", "classifier")),
              "sampler": Rule("str", choices=("shuffle", "class-balanced"))},
    "eval": {"det_score_thr": FRACTION, "batch_size": POSITIVE},
    "ensemble": {"scheme": Rule("str", choices=("mean_score", "mean_logit", "topk_logit",
                                                "ap_weight")),
                 "topk": _int(1, null=True), "folds": _int(2)},
    "viz": {"action_score_thr": FRACTION, "det_score_thr": FRACTION, "top_k": POSITIVE,
            "text_scale": Rule("float", 0, lo_open=True), "chunk": POSITIVE},
    "demo": {"classes": _int(0, items=True), "det_score_thr": FRACTION,
             "action_score_thr": FRACTION,
             "top_k": POSITIVE, "keyframe_interval": POSITIVE, "time_offset": ANY_INT},
}


# Keys renamed so that one concept has one name in every stage (issue 20): rules section ->
# old key -> new key.  An old key in a params file is a one-line error naming the new key.
RENAMED: dict[str, dict[str, str]] = {
    "detect": {"min_score": "det_score_thr"},
    "bank": {"det_threshold": "det_score_thr"},
    "train": {"det_threshold": "det_score_thr"},
    "eval": {"det_threshold": "det_score_thr"},
    "viz": {"threshold": "action_score_thr"},
    "demo": {"det_threshold": "det_score_thr", "threshold": "action_score_thr"},
}


def rules_of(section: str) -> dict[str, Rule]:
    """The :data:`RULES` of a params section (``bank.lfb``, ``heads.acar``...)."""
    top = section.split(".")[0]
    return RULES.get("train" if top in TRAIN_SECTIONS else top, {})


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
    "bank.memory": "pipeline.bank:BankConfig",
    "train": "pipeline.train:TrainConfig",
    "heads": "pipeline.train:TrainConfig",
    "eval": "pipeline.evaluate:EvalConfig",
    "report": "pipeline.report:ReportConfig",
    "viz": "pipeline.viz:VizConfig",
    "demo": "pipeline.demo:DemoConfig",
    # stage two of decoupled fine-tuning (`acar train --finetune`): merged over `train` and
    # `heads.<head>`
    "finetune": "pipeline.train:TrainConfig",
    "ensemble": "pipeline.ensemble:EnsembleConfig",
}
TRAIN_SECTIONS = ("heads", "finetune")     # sections of TrainConfig keys besides `train`


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
    top = section.split(".")[0]
    renamed = RENAMED.get("train" if top in TRAIN_SECTIONS else top, {})
    for key in node:
        if key in renamed and key not in names:
            raise ArtifactError(path, f"key '{key}' in section '{section}' is now "
                                      f"'{renamed[key]}' (renamed): rename it")
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


# Layers between the params file and the flags, per section, as "module:function" (imported
# only when that section is loaded): ``function(file_values, flags, params_path, flag_name)``
# returns the section's merged values, e.g. extract.preset (pipeline/backbones/presets.py:
# defaults < the preset < the file's keys < the flags; a --preset flag beats the file's
# keys).  What it sets is reported as coming from ``preset:<name>``.
LAYERS: dict[str, str] = {"extract": "pipeline.backbones.presets:expand"}


@dataclasses.dataclass
class Resolved:
    """A stage config and where each of its values came from.

    ``sources``: field -> the params file's name (``stages.yaml``; ``stages.yaml heads.acar``
    for a later section of a list), a layer's source (``preset:<name>``) or the flag
    (``--batch-size``); a field absent from it has its dataclass default.
    """

    config: Any
    sources: dict[str, str]
    order: list[str] = dataclasses.field(default_factory=list)   # sources, as applied

    def changed(self) -> dict[str, tuple[Any, str]]:
        """field -> (value, source) for the values that differ from the dataclass defaults,
        in field order."""
        out: dict[str, tuple[Any, str]] = {}
        for f in dataclasses.fields(self.config):
            value = getattr(self.config, f.name)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if value != default:
                out[f.name] = (value, self.sources.get(f.name, "default"))
        return out

    def summary(self, name: str) -> str:
        """One line: ``extract settings: backbone=hoghof, short_side=160 from stages.yaml;
        batch_size=4 from --batch-size`` (only values that differ from the defaults)."""
        groups: dict[str, list[str]] = {}
        for key, (value, source) in self.changed().items():
            groups.setdefault(source, []).append(f"{key}={_compact(value)}")
        if not groups:
            return f"{name} settings: the built-in defaults"
        # as they were applied: the file's, a layer's (preset:...), the flags'
        order = sorted(groups, key=lambda s: self.order.index(s) if s in self.order else -1)
        return f"{name} settings: " + "; ".join(f"{', '.join(groups[source])} from {source}"
                                                 for source in order)


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def _layer(section: str) -> Callable[..., dict[str, Any]] | None:
    spec = LAYERS.get(section.split(".")[0])
    if spec is None:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def layer_values(section: str, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(source, values)``: what the :data:`LAYERS` layer of ``section`` sets over the
    file's ``values`` (what ``--help`` shows a run would use); ``("", {})`` if nothing."""
    layer = _layer(section)
    if layer is None:
        return "", {}
    merged = layer(values, {})
    layered = {k: v for k, v in merged.items() if k not in values}
    return (f"preset:{merged.get('preset')}", layered) if layered else ("", {})


def resolve_config(cls: type[T], section: str | list[str],
                   params: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None,
                   flag_names: dict[str, str] | None = None) -> Resolved:
    """Build ``cls`` from ``params[section]``, then a :data:`LAYERS` layer, then
    ``overrides`` (``None`` values ignored), recording where each value came from.

    ``section`` may be a list; later sections update earlier ones (for example
    ``["train", "heads.acar"]``: common train params, then per-head ones).  The whole
    params file is checked first (:func:`check_params`).  ``flag_names``: field -> the flag
    that sets it, where it is not ``--field-name``.
    """
    data = read_params(params)
    path = params or DEFAULT_PARAMS
    check_params(data, path)
    where = Path(path).name if params is None else str(path)
    sections = [section] if isinstance(section, str) else section
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    order: list[str] = []                  # the sources, as they apply
    for i, sec in enumerate(sections):
        given = section_values(sec, data, path)
        values.update(given)
        order.append(where if i == 0 else f"{where} {sec}")
        sources.update(dict.fromkeys(given, order[-1]))
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    first = sections[0]
    layer = _layer(first)           # e.g. extract.preset: defaults < preset < keys < flags
    if layer is not None:
        merged = layer(values, flags, path, _flag)
        # what the layer set, or changed (a --preset over the file's keys), is its own
        layered = {k: v for k, v in merged.items()
                   if k not in flags and (k not in values or values[k] != v)}
        if layered:
            source = f"preset:{merged.get('preset')}"
            sources.update(dict.fromkeys(layered, source))
            order.append(source)
        values = {k: v for k, v in merged.items() if k not in flags}
    values.update(flags)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ArtifactError(path, f"unknown {cls.__name__} parameter(s) {unknown}; "
                                  f"known: {sorted(names)}")

    def flag(key: str) -> str:
        return (flag_names or {}).get(key) or _flag(key)

    sources.update({key: flag(key) for key in flags})
    order.extend(flag(key) for key in flags)
    check_values(first, flags, flag)       # the file's values were checked above
    cfg = cls(**values)
    if getattr(cfg, "nesterov", False) and getattr(cfg, "momentum", None) == 0:
        raise ArtifactError(flag("momentum") if "momentum" in flags else path,
                            f"{first}.momentum must be > 0 with nesterov: true, got 0")
    return Resolved(cfg, sources, order)


def load_config(cls: type[T], section: str | list[str], params: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """:func:`resolve_config`'s config (without the record of where its values came from)."""
    return resolve_config(cls, section, params, overrides).config


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
