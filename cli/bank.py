from __future__ import annotations

import click

from .common import config, fail_if, parse_shard


@click.command()
@click.option("--kind", type=click.Choice(["lfb", "acfb"]), default=None,
              help="lfb: actor vectors; acfb: first-order maps of a trained acar  [lfb]")
@click.option("--features", required=True, help="Feature store (path or fsspec URL).")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, help="Bank store to write (Zarr v3).")
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="acfb: the trained acar checkpoint.")
@click.option("--shard", default=None, help="Process a deterministic 1/N of the videos: i/N.")
@click.pass_context
def bank(ctx, kind, features, detections, out, model, shard) -> None:
    """Build a long-term feature bank, one group per video (resumable)."""
    from pipeline import bank as stage

    cfg = config(ctx, stage.BankConfig, "bank", kind=kind)
    fail_if(stage.run(cfg, features, detections, out, model, parse_shard(shard)), "videos")
