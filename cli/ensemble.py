from __future__ import annotations

import click

from .common import LABELMAP_HELP, config, stage_command


def parse_members(ctx, param, values: tuple[str, ...]) -> list[tuple[str, str]]:
    """('linear=a.parquet', 'b/predictions.csv', ...) -> [(name, path)]: a path alone is
    named after its folder (data/eval/acar/predictions.csv -> acar)."""
    from pathlib import Path

    out: list[tuple[str, str]] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).parent.name or Path(value).stem, value
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise click.BadParameter(f"expected NAME=PATH or PATH, got '{value}'")
        if not Path(path).is_file():
            raise click.BadParameter(f"'{path}' is not a file")
        out.append((name, path))
    return out


@stage_command("ensemble")
@click.option("--predictions", "members", multiple=True, required=True, metavar="NAME=PATH",
              callback=parse_members,
              help="A head's predictions: the prediction table acar eval writes "
                   "(predictions.parquet) or its predictions.csv (the table beside it is "
                   "read; without one, scores only).  Repeat it once per member.")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False),
              help=LABELMAP_HELP)
@click.option("--scheme", default=None,
              help="mean_score | mean_logit | topk_logit | ap_weight")
@click.option("--topk", type=int, default=None,
              help="topk_logit: the k largest logits averaged  [n // 2 of the n members]")
@click.option("--select", default=None, type=click.Choice(["all", "greedy"]),
              help="Which members enter: all, or greedy (forward selection on the mAP of the "
                   "other folds, per fold: each fold fused from the members chosen without "
                   "its labels)")
@click.option("--folds", type=int, default=None,
              help="ap_weight, --select greedy: cross-fitting folds of the scored videos")
@click.option("--annotations", default=None, type=click.Path(exists=True, dir_okay=False),
              help="ap_weight, --select greedy: the ground truth of the predicted videos "
                   "(fitted on it cross-wise: each fold's boxes fused with what the other "
                   "folds fitted).")
@click.option("--excluded", default=None, type=click.Path(exists=True, dir_okay=False),
              help="ap_weight, --select greedy: excluded timestamps, as acar eval "
                   "--excluded.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The ensemble's predictions CSV (its prediction table goes beside it, "
                   ".parquet); score it with acar eval --predictions.")
@click.pass_context
def ensemble(ctx, members, labelmap, scheme, topk, select, folds, annotations, excluded,
             out) -> None:
    """Several heads' predictions of the same boxes -> one prediction file.

    \b
    acar ensemble --predictions linear=data/eval/linear/predictions.parquet \\
                  --predictions acar=data/eval/acar/predictions.parquet ... \\
                  --labelmap data/synth/labelmap.pbtxt --scheme mean_logit \\
                  --out data/ensemble/mean_logit/predictions.csv
    acar eval --predictions data/ensemble/mean_logit/predictions.csv --annotations ... \\
              --labelmap ... --out data/eval/ens_mean_logit/metrics.json

    Schemes, per box and class: mean_score (mean of the scores), mean_logit (the
    activation of the mean logit), topk_logit (of the mean of the k largest logits, k = n
    // 2), ap_weight (scores weighted by each member's AP on the class, cross-fitted over
    --folds folds of the videos of --annotations).  --select greedy keeps, per fold, the
    members that raise the scheme's mAP on the other folds (Caruana et al. 2004).
    """
    from pipeline import ensemble as stage

    cfg = config(ctx, stage.EnsembleConfig, "ensemble", scheme=scheme, topk=topk, folds=folds,
                 select=select)
    summary = stage.run(cfg, members, labelmap, out, annotations, excluded)
    k = f", k={summary['k']}" if "k" in summary else ""
    click.echo(f"{cfg.scheme}{k} over {len(members)} members "
               f"({', '.join(n for n, _ in members)}), {summary['boxes']} boxes -> {out}")
    for fold in (f for f in summary.get("folds", []) if "steps" in f):
        why = (f"chosen on the other {fold['fitted_on_videos']} (mAP "
               f"{fold['steps'][-1]['mAP']:.4f} there)") if fold["steps"] else \
            "all: the other folds have no ground truth"
        click.echo(f"  fold {fold['fold']} ({fold['videos']} videos): "
                   f"{', '.join(fold['members'])}, {why}")
