from __future__ import annotations

import click

from .common import config, parse_shard


@click.command("eval")
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Checkpoint: run inference first (needs --features, --detections).")
@click.option("--features", default=None, help="Feature store (path or fsspec URL).")
@click.option("--detections", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--predictions", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Standalone: score this AVA result CSV instead of running a model. "
                   "Repeat it to merge inference shards first (into --predictions-out).")
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
@click.option("--shard", default=None,
              help="With --model: predict a deterministic 1/N of the videos (i/N) into "
                   "--predictions-out, without scoring.")
@click.option("--bank", default=None,
              help="Bank store, for a model whose head reads a bank (acfb, lfb).")
@click.pass_context
def eval_cmd(ctx, model, features, detections, predictions, annotations, labelmap, excluded,
             out, predictions_out, plots_dir, shard, bank) -> None:
    """Frame-mAP at IoU 0.5 (the official AVA evaluator's rules) -> metrics.json.

    \b
    Two forms:
      acar eval --model M.pt --features F --detections D --annotations GT --labelmap L --out m.json
                [--bank B.zarr]   (bank heads)
      acar eval --predictions P.csv --annotations GT --labelmap L [--excluded E] --out m.json

    \b
    Sharded inference, then one merge-and-score:
      acar eval --model M.pt ... --shard 0/2 --predictions-out part0.csv --out unused.json
      acar eval --model M.pt ... --shard 1/2 --predictions-out part1.csv --out unused.json
      acar eval --predictions part0.csv --predictions part1.csv --predictions-out all.csv ...
    """
    from pipeline import evaluate as stage

    if (model is None) == (not predictions):
        raise click.UsageError("give exactly one of --model or --predictions")
    if predictions:
        path = predictions[0]
        if len(predictions) > 1:
            if predictions_out is None:
                raise click.UsageError("merging several --predictions needs --predictions-out")
            stage.merge_predictions(list(predictions), predictions_out)
            path = predictions_out
        metrics = stage.score(path, annotations, labelmap, excluded, out, plots_dir)
    else:
        if features is None or detections is None:
            raise click.UsageError("--model needs --features and --detections")
        i, n = parse_shard(shard)
        if n > 1 and predictions_out is None:
            raise click.UsageError("--shard needs --predictions-out")
        cfg = config(ctx, stage.EvalConfig, "eval")
        metrics = stage.run(cfg, model, features, detections, annotations, labelmap, out,
                            predictions_out, excluded, plots_dir, (i, n), bank)
        if n > 1:
            click.echo(f"predictions of shard {i}/{n} -> {predictions_out}")
            return
    click.echo(f"mAP {metrics['mAP']:.4f}  ({out})")
