"""``acar fuse``: two feature stores -> one, their maps concatenated or added."""

from __future__ import annotations

import click


@click.command("fuse")
@click.argument("first", type=click.Path(exists=True))
@click.argument("second", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(),
              help="The fused feature store (features.zarr); train and eval read it as any")
@click.option("--mode", type=click.Choice(["concat", "add"]), default="concat",
              show_default=True,
              help="concat: channels Ca + Cb; add: the sum (the same C)")
def fuse(first: str, second: str, out: str, mode: str) -> None:
    """Fuse feature stores FIRST and SECOND (the same videos, keyframes, views and grid)
    into OUT: the papers' RGB + flow and multi-backbone fusion.  A rerun reuses the fused
    videos whose sources did not change."""
    from pipeline.fuse import FuseConfig, run

    run(FuseConfig(mode), first, second, out)
