from __future__ import annotations

import click

from .common import LABELMAP_HELP, config, stage_command, warn


def parse_hparams(items: tuple[str, ...]) -> dict:
    """``("window=10", "agg=max")`` -> ``{"window": 10, "agg": "max"}`` (values as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not key.strip().isidentifier():
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--hparam")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise click.BadParameter(f"'{item}': the value is not YAML ({e.problem})",
                                     param_hint="--hparam") from None
    return out


@stage_command("train")
@click.option("--head", default=None,
              help="Head name (the list below); its settings are stages.yaml heads.<HEAD>")
@click.option("--features", required=True, help="Feature store (path or fsspec URL).")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False),
              help="detections.parquet (acar detect): the boxes scoring at least "
                   "--det-score-thr that overlap a GT box are extra training samples, and "
                   "the --val-annotations mAP is measured on them.")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training labels (AVA CSV).")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False),
              help=LABELMAP_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--bank", default=None, help="Bank store, for bank heads.")
@click.option("--val-annotations", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Also report the val mAP after every --val-every-th epoch and the "
                   "last.")
@click.option("--val-every", type=int, default=None, metavar="N",
              help="With --val-annotations: validate after every N-th epoch (and the "
                   "last)  [stages.yaml train.val_every]")
@click.option("--val-excluded", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Excluded-timestamps CSV for the val mAP (as eval --excluded scores it).")
@click.option("--log", default=None, type=click.Path(dir_okay=False),
              help="Per-epoch CSV log (loss, val mAP)  [OUT.log.csv]")
@click.option("--epochs", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--det-score-thr", type=float, default=None,
              help="Detections with at least this score are used")
@click.option("--strict", is_flag=True,
              help="An error, not a warning, when --det-score-thr drops most detections.")
@click.option("--init", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Start from this checkpoint's weights (those that fit)  "
                   "[stages.yaml heads.<HEAD>.init]")
@click.option("--train", default=None, type=click.Choice(["all", "classifier"]),
              help="Which parameters train: all, or the final classifier only (the rest "
                   "frozen: stage two of decoupled fine-tuning; needs --init)")
@click.option("--sampler", default=None, type=click.Choice(["shuffle", "class-balanced"]),
              help="shuffle: every keyframe once per epoch; class-balanced: a class "
                   "uniformly, then one of its boxes (its keyframe batched whole, the drawn "
                   "box carries the loss)")
@click.option("--finetune", is_flag=True,
              help="Take the settings of stages.yaml `finetune` too (over train and "
                   "heads.<HEAD>): decoupled class-balanced fine-tuning of the --init head")
@click.option("--hparam", "hparams", multiple=True, metavar="KEY=VALUE",
              help="Set one of the head's hyper-parameters over stages.yaml "
                   "heads.<HEAD>.hparams (repeatable; VALUE is read as YAML), e.g. the "
                   "memory bank's reach for stage two of t_only: --hparam window=10")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its resume state OUT.partial (written "
                   "after every epoch; OUT itself only ever holds a finished model).")
@click.pass_context
def train(ctx, head, features, detections, annotations, labelmap, out, bank, val_annotations,
          log, epochs, lr, seed, det_score_thr, strict, init, train, sampler, finetune,
          resume, val_excluded, hparams, val_every) -> None:
    """Train a head on cached features (no video decoding).

    Parameters come from the `train` section of stages.yaml, then `heads.<HEAD>`
    (per-head settings), then the flags.

    \b
    Heads (--head):
      linear       RoI features -> classifier (the baseline)
      actor_actor  relations between the actors (self-attention over them)
      acrn         actor-context relations (ACRN: each actor with every context cell)
      acar         actor-context-actor relations (ACAR-Net's HR2O)
      acfb         acar with a long-term actor-context feature bank (--bank, bank --kind acfb)
      lfb          long-term feature bank of actor vectors (--bank, bank --kind lfb)
      atr          actor-target relations (attention to the context outside the box)
      s_only       S-only: a transformer over the actors at each RoI cell (time bins:
                   extract --temporal N)
      t_only       T-only: a transformer over the actors at each time bin (extract
                   --temporal N)

    \b
    Decoupled long-tail fine-tuning (Kang et al. 2019), after a head is trained:
      acar train --head H --finetune --init data/models/H.pt --out data/models/H_cb.pt
    (stages.yaml `finetune`: --train classifier --sampler class-balanced)
    """
    from pipeline import train as stage
    from pipeline.artifacts.annotations import read_annotations
    from pipeline.evaluate import det_score_check

    name = head or config(ctx, stage.TrainConfig, "train", show=False).head
    sections = ["train", f"heads.{name}"] + (["finetune"] if finetune else [])
    given = parse_hparams(hparams)
    if given:       # over the params file's hparams of the head, not instead of them
        given = {**config(ctx, stage.TrainConfig, sections, show=False, head=name).hparams,
                 **given}
    cfg = config(ctx, stage.TrainConfig, sections, head=name, epochs=epochs, lr=lr, seed=seed,
                 det_score_thr=det_score_thr, init=init, train=train, sampler=sampler,
                 hparams=given or None, val_every=val_every,
                 flags={"hparams": "--hparam"})
    videos = set(read_annotations(annotations)["video_id"])
    if val_annotations is not None:
        videos |= set(read_annotations(val_annotations)["video_id"])
    warn(det_score_check(detections, cfg.det_score_thr, "train", strict, videos))
    stage.run(cfg, features, detections, annotations, labelmap, out,
              val_annotations=val_annotations, log=log, resume=resume, bank=bank,
              val_excluded=val_excluded)
