from __future__ import annotations

import click

from .common import (
    DETECTIONS_HELP,
    config,
    fail_if,
    parse_shard,
    renamed_option,
    stage_command,
    warn,
)


@stage_command("bank.lfb", "bank.acfb", "bank.memory")
@click.option("--kind", type=click.Choice(["lfb", "acfb", "memory"]), default="lfb",
              show_default=True,
              help="lfb: actor vectors of the detections; acfb: first-order actor-context "
                   "maps of a trained acar; memory: pooled person features of a trained "
                   "t_only (its memory bank).")
@click.option("--features", required=True, help="Feature store (path or fsspec URL).")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False),
              help=DETECTIONS_HELP)
@click.option("--out", required=True, help="Bank store to write (Zarr v3).")
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="acfb: the trained acar checkpoint; memory: the trained t_only one.")
@click.option("--annotations", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="acfb, memory: GT boxes (AVA CSV, repeatable) used instead of detections on the "
                   "keyframes they label (give the train CSVs).")
@click.option("--pool", type=click.Choice(["none", "2x2", "4x4"]), default=None,
              help="acfb: max-pool of the stored maps (size against detail); "
                   "heads.acfb.hparams.pool must match")
@click.option("--scene/--no-scene", default=None,
              help="acfb: also bank each keyframe's context map (for heads.acfb.hparams.scene)")
@click.option("--det-score-thr", type=float, default=None,
              help="Detections with at least this score are banked")
@renamed_option("--det-threshold", "--det-score-thr")
@click.option("--strict", is_flag=True,
              help="An error, not a warning, when --det-score-thr drops most detections.")
@click.option("--shard", default=None, help="Process a deterministic 1/N of the videos: i/N.")
@click.pass_context
def bank(ctx, kind, features, detections, out, model, annotations, pool, scene, det_score_thr,
         strict, shard) -> None:
    """Build a long-term feature bank, one group per video (resumable).

    Parameters come from the `bank.<KIND>` section of stages.yaml, then the flags.
    Prints the bank's size in bytes per keyframe.
    """
    from pipeline import bank as stage
    from pipeline.evaluate import det_score_check

    cfg = config(ctx, stage.BankConfig, f"bank.{kind}", kind=kind, pool=pool, scene=scene,
                 det_score_thr=det_score_thr)
    warn(det_score_check(detections, cfg.det_score_thr, "bank", strict))
    fail_if(stage.run(cfg, features, detections, out, model, list(annotations),
                      parse_shard(shard)), "videos")
