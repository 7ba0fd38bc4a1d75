from __future__ import annotations

import click

from .common import config


@click.command("eval")
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Checkpoint: run inference first (needs --features, --detections).")
@click.option("--features", default=None, help="Feature store (path or fsspec URL).")
@click.option("--detections", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--predictions", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Standalone: score this AVA result CSV instead of running a model.")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Ground truth (AVA CSV); its videos are the ones evaluated.")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--excluded", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Excluded timestamps CSV (video_id, timestamp).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="metrics.json")
@click.option("--predictions-out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the model's predictions  [beside --out]")
@click.option("--plots-dir", default=None, type=click.Path(file_okay=False),
              help="Write per-class AP CSV and PR-curve PNG here.")
@click.option("--bank", default=None,
              help="Bank store, for a model whose head reads a bank (acfb, lfb).")
@click.pass_context
def eval_cmd(ctx, model, features, detections, predictions, annotations, labelmap, excluded,
             out, predictions_out, plots_dir, bank) -> None:
    """Frame-mAP at IoU 0.5 (the official AVA evaluator's rules) -> metrics.json.

    \b
    Two forms:
      acar eval --model M.pt --features F --detections D --annotations GT --labelmap L --out m.json
                [--bank B.zarr]   (bank heads)
      acar eval --predictions P.csv --annotations GT --labelmap L [--excluded E] --out m.json
    """
    from pipeline import evaluate as stage

    if (model is None) == (predictions is None):
        raise click.UsageError("give exactly one of --model or --predictions")
    if predictions is not None:
        metrics = stage.score(predictions, annotations, labelmap, excluded, out, plots_dir)
    else:
        if features is None or detections is None:
            raise click.UsageError("--model needs --features and --detections")
        cfg = config(ctx, stage.EvalConfig, "eval")
        metrics = stage.run(cfg, model, features, detections, annotations, labelmap, out,
                            predictions_out, excluded, plots_dir, bank)
    click.echo(f"mAP {metrics['mAP']:.4f}  ({out})")
