"""Helpers shared by the subcommands (parsing only; no stage logic)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import DEFAULT_PARAMS, load_config

T = TypeVar("T")
HINT = re.compile(r"\s{2,}\[([^\[\]]*)\]\s*$")    # a help text's trailing "  [...]"


def config(ctx: click.Context, cls: type[T], section: str | list[str], **overrides: Any) -> T:
    """The stage config: stages.yaml section(s), then the flags that were given."""
    return load_config(cls, section, _params(ctx), overrides)


def _params(ctx: click.Context) -> str | None:
    return (ctx.find_object(dict) or {}).get("params")


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

    def run_values(self, ctx: click.Context) -> dict[str, list[tuple[str, str, Any]]]:
        """field -> [(section, source, value)] per section: what a run would use."""
        from pipeline.config import check_params, config_class, read_params, section_values

        path = _params(ctx)
        data = read_params(path)
        where = Path(path or DEFAULT_PARAMS).name
        check_params(data, path or DEFAULT_PARAMS, list(self.sections))
        out: dict[str, list[tuple[str, str, Any]]] = {}
        for section in self.sections:
            cls = config_class(section)
            given = section_values(section, data, where)
            for f in dataclasses.fields(cls):
                if f.name in given:
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
