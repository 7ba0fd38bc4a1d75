"""Helpers shared by the subcommands (parsing only; no stage logic)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from pipeline.config import DEFAULT_PARAMS, resolve_config

T = TypeVar("T")
HINT = re.compile(r"\s{2,}\[([^\[\]]*)\]\s*$")    # a help text's trailing "  [...]"


RENAMED = "acar.renamed"      # ctx.meta key: field -> (old flag, value) of renamed flags


def config(ctx: click.Context, cls: type[T], section: str | list[str], show: bool = True,
           flags: dict[str, str] | None = None, **overrides: Any) -> T:
    """The stage config: stages.yaml section(s), then the flags that were given.

    ``show``: print (stderr) the settings that differ from the dataclass defaults and where
    each came from, e.g. ``extract settings: backbone=hoghof, short_side=160 from
    stages.yaml; batch_size=4 from --batch-size``.  ``flags``: field -> the flag that set it,
    where it is not ``--<field>`` (``{"hparams": "--hparam"}``).
    """
    flag_names: dict[str, str] = dict(flags or {})
    for name, (old, value) in ctx.meta.get(RENAMED, {}).items():
        if overrides.get(name) is not None:
            raise click.UsageError(f"{old} is the old name of --{name.replace('_', '-')}: "
                                   "give one of them")
        overrides[name], flag_names[name] = value, old
    resolved = resolve_config(cls, section, _params(ctx), overrides, flag_names)
    if show:
        click.echo(resolved.summary(ctx.info_name or "acar"), err=True)
    return resolved.config


def _params(ctx: click.Context) -> str | None:
    return (ctx.find_object(dict) or {}).get("params")


def _set_params(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``acar STAGE --params FILE``: the same as ``acar --params FILE STAGE``; both: an error."""
    if value is None:
        return
    parent = ctx.parent
    if (parent is not None and "params" in parent.params
            and parent.get_parameter_source("params") is ParameterSource.COMMANDLINE):
        raise click.UsageError("--params is given both before and after the subcommand: "
                               "give it once", ctx)
    ctx.ensure_object(dict)["params"] = value


def params_option() -> click.Option:
    """The subcommand's ``--params`` (eager, so that ``--params FILE --help`` shows FILE's
    values)."""
    return click.Option(["--params"], type=click.Path(dir_okay=False), default=None,
                        expose_value=False, is_eager=True, callback=_set_params,
                        help="Parameter file, as `acar --params FILE STAGE`  "
                             "[./stages.yaml if present, else built-in defaults]")


def renamed_option(old: str, new: str, type: Any = float) -> Callable:
    """A hidden option ``old`` that still sets the field of ``new``, with a warning."""
    name = new.lstrip("-").replace("-", "_")

    def keep(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            click.echo(f"warning: {old} is now {new} (renamed)", err=True)
            ctx.meta.setdefault(RENAMED, {})[name] = (old, value)

    return click.option(old, type=type, default=None, hidden=True, expose_value=False,
                        callback=keep)


def warn(message: str | None) -> None:
    """Print ``warning: MESSAGE`` to stderr (nothing for None)."""
    if message:
        click.echo(f"warning: {message}", err=True)


DETECTIONS_HELP = ("detections.parquet (acar detect): the person boxes; those scoring at "
                   "least --det-score-thr are used.")
LABELMAP_HELP = "AVA label map (.pbtxt): the class ids and names (and superclasses)."


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


class StageCommand(click.Command):
    """A subcommand whose ``--help`` shows, for each option that fills a field of its
    stage's config, the value a run would use: the params file's (``[stages.yaml: 160]``),
    else the dataclass default (``[default: 256]``).

    The options follow one convention: ``default=None`` means "not given", so the file or
    the dataclass decides.  An option's help may end in a ``[hint]`` saying what a null
    value means (``[the backbone's]``); it is shown when the value is null.  ``sections``:
    the params section(s) whose values the help shows, e.g. ``("bank.lfb", "bank.acfb")``
    for a command with one section per kind.
    """

    def __init__(self, *args: Any, sections: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections
        self.params.append(params_option())

    def run_values(self, ctx: click.Context) -> dict[str, list[tuple[str, str, Any]]]:
        """field -> [(section, source, value)] per section: what a run would use."""
        from pipeline.config import (
            check_params,
            config_class,
            layer_values,
            read_params,
            section_values,
        )

        path = _params(ctx)
        data = read_params(path)
        where = Path(path or DEFAULT_PARAMS).name
        check_params(data, path or DEFAULT_PARAMS, list(self.sections))
        out: dict[str, list[tuple[str, str, Any]]] = {}
        for section in self.sections:
            cls = config_class(section)
            given = section_values(section, data, where)
            source, layered = layer_values(section, given)     # a preset named in the file
            for f in dataclasses.fields(cls):
                if f.name in layered:
                    item = (section, source, layered[f.name])
                elif f.name in given:
                    item = (section, where, given[f.name])
                elif f.default is not dataclasses.MISSING:
                    item = (section, "default", f.default)
                else:
                    item = (section, "default", f.default_factory())  # type: ignore[misc]
                out.setdefault(f.name, []).append(item)
        return out

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        values = self.run_values(ctx) if self.sections else {}
        rows = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or isinstance(param, click.Argument):
                continue
            if param.name in values and param.default is None:
                record = (record[0], _with_value(record[1], values[param.name]))
            rows.append(record)
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)


def _with_value(text: str, items: list[tuple[str, str, Any]]) -> str:
    hint = HINT.search(text)
    body = text[:hint.start()] if hint else text
    if all(value is None for _, _, value in items) and hint:
        return text
    sources = {source for _, source, _ in items}
    shown = {_shown(value) for _, _, value in items}
    if len(shown) == 1:
        label = f"{sources.pop()}: " if len(sources) == 1 else ""
        tail = f"[{label}{shown.pop()}]"
    else:
        tail = "[" + "; ".join(f"{section}: {_shown(value)}" for section, _, value in items) + "]"
    return f"{body}  {tail}" if body else tail


def stage_command(*sections: str, name: str | None = None, **attrs: Any) -> Callable:
    """``@click.command`` for a stage subcommand filled from ``sections`` of the params
    file; its ``--help`` shows their values (:class:`StageCommand`)."""
    return click.command(name, cls=StageCommand, sections=sections, **attrs)


def parse_shard(value: str | None) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    if not value:
        return (0, 1)
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/N, got '{value}'", param_hint="--shard") from None
    if not 0 <= i < n:
        raise click.BadParameter(f"need 0 <= i < N, got '{value}'", param_hint="--shard")
    return (i, n)


def int_list(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None


def fail_if(failures: list[str], what: str) -> None:
    if failures:
        raise click.ClickException(f"{len(failures)} {what} failed:\n  " + "\n  ".join(failures))
