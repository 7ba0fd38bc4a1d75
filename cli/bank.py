from __future__ import annotations

import click

from .common import config, fail_if, parse_shard, stage_command


@stage_command("bank.lfb", "bank.acfb")
@click.option("--kind", type=click.Choice(["lfb", "acfb"]), default="lfb", show_default=True,
              help="lfb: actor vectors of the detections; acfb: first-order actor-context "
                   "maps of a trained acar.")
@click.option("--features", required=True, help="Feature store (path or fsspec URL).")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, help="Bank store to write (Zarr v3).")
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="acfb: the trained acar checkpoint.")
@click.option("--annotations", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="acfb: GT boxes (AVA CSV, repeatable) used instead of detections on the "
                   "keyframes they label (give the train CSVs).")
@click.option("--pool", type=click.Choice(["none", "2x2", "4x4"]), default=None,
              help="acfb: max-pool of the stored maps (size against detail); "
                   "heads.acfb.hparams.pool must match")
@click.option("--det-threshold", type=float, default=None,
              help="Detections with at least this score are banked")
@click.option("--shard", default=None, help="Process a deterministic 1/N of the videos: i/N.")
@click.pass_context
def bank(ctx, kind, features, detections, out, model, annotations, pool, det_threshold,
         shard) -> None:
    """Build a long-term feature bank, one group per video (resumable).

    Parameters come from the `bank.<KIND>` section of stages.yaml, then the flags.
    Prints the bank's size in bytes per keyframe.
    """
    from pipeline import bank as stage

    cfg = config(ctx, stage.BankConfig, f"bank.{kind}", kind=kind, pool=pool,
                 det_threshold=det_threshold)
    fail_if(stage.run(cfg, features, detections, out, model, list(annotations),
                      parse_shard(shard)), "videos")
