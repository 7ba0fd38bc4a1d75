from __future__ import annotations

import click

from .common import config, stage_command


@stage_command("train")
@click.option("--head", default=None,
              help="Head name: linear, actor_actor, acrn, acar, acfb or lfb; its settings "
                   "are stages.yaml heads.<HEAD>")
@click.option("--features", required=True, help="Feature store (path or fsspec URL).")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training labels (AVA CSV).")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--bank", default=None, help="Bank store, for bank heads.")
@click.option("--val-annotations", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Also report the val mAP after every epoch.")
@click.option("--val-excluded", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Excluded-timestamps CSV for the val mAP (as eval --excluded scores it).")
@click.option("--log", default=None, type=click.Path(dir_okay=False),
              help="Per-epoch CSV log (loss, val mAP)  [OUT.log.csv]")
@click.option("--epochs", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--init", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Start from this checkpoint's weights (those that fit)  "
                   "[stages.yaml heads.<HEAD>.init]")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its resume state OUT.partial (written "
                   "after every epoch; OUT itself only ever holds a finished model).")
@click.pass_context
def train(ctx, head, features, detections, annotations, labelmap, out, bank, val_annotations,
          log, epochs, lr, seed, init, resume, val_excluded) -> None:
    """Train a head on cached features (no video decoding).

    Parameters come from the `train` section of stages.yaml, then `heads.<HEAD>`
    (per-head settings), then the flags.
    """
    from pipeline import train as stage

    name = head or config(ctx, stage.TrainConfig, "train").head
    cfg = config(ctx, stage.TrainConfig, ["train", f"heads.{name}"], head=name, epochs=epochs,
                 lr=lr, seed=seed, init=init)
    stage.run(cfg, features, detections, annotations, labelmap, out,
              val_annotations=val_annotations, log=log, resume=resume, bank=bank,
              val_excluded=val_excluded)
