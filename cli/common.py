"""Helpers shared by the subcommands (parsing only; no stage logic)."""

from __future__ import annotations

from typing import Any, TypeVar

import click

from pipeline.config import load_config

T = TypeVar("T")


def config(ctx: click.Context, cls: type[T], section: str | list[str], **overrides: Any) -> T:
    """The stage config: stages.yaml section(s), then the flags that were given."""
    return load_config(cls, section, ctx.obj.get("params"), overrides)


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
