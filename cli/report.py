from __future__ import annotations

import click

from .common import config, stage_command


def parse_metrics(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    """('linear=a.json', ...) -> {'linear': 'a.json', ...} (order kept, heads unique)."""
    out: dict[str, str] = {}
    for value in values:
        head, sep, path = value.partition("=")
        head, path = head.strip(), path.strip()
        if not sep or not head or not path:
            raise click.BadParameter(f"expected HEAD=PATH, got '{value}'")
        if head in out:
            raise click.BadParameter(f"head '{head}' is given twice")
        out[head] = path
    return out


@stage_command("report")
@click.option("--metrics", "metrics", multiple=True, required=True, metavar="HEAD=PATH",
              callback=parse_metrics,
              help="A head's metrics.json (acar eval), e.g. acar=data/eval/acar/metrics.json. "
                   "Repeat it once per head; the table keeps this order.")
@click.option("--logs", "logs", multiple=True, metavar="HEAD=PATH", callback=parse_metrics,
              help="A head's training log (acar train --log), for train_loss.png and "
                   "val_mAP.png. Repeat it once per head.")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Validation ground truth (AVA CSV), for the chance row.")
@click.option("--train-annotations", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Training ground truth (AVA CSV): the rare classes of the \"rare\" checks "
                   "are those under report.rare_share of its boxes (as the papers rank "
                   "classes by training samples)  [default: --annotations]")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Label map whose `superclass` fields define the action families.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for report.md, report.png and the plots' PNGs.")
@click.option("--title", default=None, help="Report and chart title")
@click.option("--families", default=None,
              help="Comma-separated superclasses to show, in order")
@click.pass_context
def report(ctx, metrics, logs, annotations, train_annotations, labelmap, out, title,
           families) -> None:
    """Compare heads: AP per action family and mAP -> report.md + report.png.

    \b
    acar report --metrics linear=data/eval/linear/metrics.json \\
                --metrics acar=data/eval/acar/metrics.json ... \\
                --annotations data/synth/val.csv --labelmap data/synth/labelmap.pbtxt \\
                --out data/report

    The markdown table has a chance row (random scores: the classes' prevalence in
    --annotations) and checks the papers' orderings between the heads that are present
    (linear near the best on pose; acrn on context, acar on relation, acfb and lfb on
    long-term classes), each with its measured margin.
    """
    from pipeline import report as stage

    fams = None if families is None else [f.strip() for f in families.split(",") if f.strip()]
    cfg = config(ctx, stage.ReportConfig, "report", title=title, families=fams)
    result = stage.run(cfg, metrics, annotations, labelmap, out, logs or None,
                       train_annotations)
    checks = [c for c in result["orderings"] if c["passed"] is not None]
    required = [c for c in checks if c["required"]]
    passed = sum(c["passed"] for c in required)
    seen = len(checks) - len(required)
    click.echo(f"{len(result['table'])} heads; orderings {passed}/{len(required)} hold"
               + (f" (+{seen} observation{'s' if seen > 1 else ''}, marked ○)" if seen else "")
               + f"  ({out}/report.md, report.png)")
