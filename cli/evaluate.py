from __future__ import annotations

import click

from .common import DETECTIONS_HELP, LABELMAP_HELP, StageCommand, config, parse_shard, warn

MODE_NAMES = "official-2019 (default) | official-2020 | mmaction2 | slowfast"


class _EvalCommand(StageCommand):
    """Appends the table of the eval modes' switches to --help (built from
    ``pipeline.ava_eval.MODES``, imported only when help is shown)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from pipeline.ava_eval import switch_table

        rows = switch_table()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        formatter.write_paragraph()
        formatter.write_text("Modes: each is a set of switches over one evaluator:")
        with formatter.indentation():
            for r in rows:
                line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                formatter.write(" " * formatter.current_indent + line.rstrip() + "\n")


def _mode(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    from pipeline.ava_eval import DEFAULT_MODE, get_mode

    try:
        get_mode(value or DEFAULT_MODE)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return value or DEFAULT_MODE


@click.command("eval", cls=_EvalCommand, sections=("eval",))
@click.option("--model", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Checkpoint: run inference first (needs --features, --detections).")
@click.option("--features", default=None, help="Feature store (path or fsspec URL).")
@click.option("--detections", default=None, type=click.Path(exists=True, dir_okay=False),
              help=DETECTIONS_HELP)
@click.option("--predictions", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Standalone: score this AVA result CSV instead of running a model. "
                   "Repeat it to merge inference shards first (into --predictions-out).")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Ground truth (AVA CSV); its videos are the ones evaluated.")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False),
              help=LABELMAP_HELP)
@click.option("--excluded", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Excluded timestamps CSV (video_id, timestamp); not in official-2020.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="metrics.json (required unless --compare-modes)")
@click.option("--predictions-out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the model's predictions  [beside --out]")
@click.option("--plots-dir", default=None, type=click.Path(file_okay=False),
              help="Write per-class AP CSV and PR-curve PNG here.")
@click.option("--shard", default=None,
              help="With --model: predict a deterministic 1/N of the videos (i/N) into "
                   "--predictions-out, without scoring.")
@click.option("--bank", default=None,
              help="Bank store, for a model whose head reads a bank (acfb, lfb).")
@click.option("--det-score-thr", type=float, default=None,
              help="With --model: persons scoring at least this get predictions (real "
                   "detectors usually need 0.3-0.7)")
@click.option("--strict", is_flag=True,
              help="An error, not a warning, when --det-score-thr drops most detections.")
@click.option("--mode", default=None, callback=_mode,
              help=f"Score as this evaluator does: {MODE_NAMES}; the switches are listed "
                   "below.")
@click.option("--compare-modes", is_flag=True,
              help="With --predictions: print the mAP under every mode and the switch that "
                   "moves it most (and write --out, if given, under --mode).")
@click.option("--action-thr", default=None, type=float,
              help="Drop predictions scoring <= this first (mmaction2's action_thr; its "
                   "AVAMetric uses 0.002).  [default: keep all]")
@click.pass_context
def eval_cmd(ctx, model, features, detections, predictions, annotations, labelmap, excluded,
             out, predictions_out, plots_dir, shard, bank, det_score_thr, strict, mode,
             compare_modes, action_thr) -> None:
    """Frame-mAP at IoU 0.5 (the official AVA evaluator's rules, or another tool's with
    --mode) -> metrics.json.

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

    \b
    How the evaluators papers report differ, on your predictions:
      acar eval --predictions P.csv --annotations GT --labelmap L [--excluded E] --compare-modes
    """
    from pipeline import evaluate as stage

    if (model is None) == (not predictions):
        raise click.UsageError("give exactly one of --model or --predictions")
    if compare_modes and model is not None:
        raise click.UsageError("--compare-modes scores a file: give --predictions (e.g. the "
                               "predictions.csv a --model run wrote)")
    if out is None and not compare_modes:
        raise click.UsageError("missing option '--out'")
    if predictions:
        path = predictions[0]
        if len(predictions) > 1:
            if predictions_out is None:
                raise click.UsageError("merging several --predictions needs --predictions-out")
            stage.merge_predictions(list(predictions), predictions_out)
            path = predictions_out
        if compare_modes:
            from pipeline.ava_eval import compare_modes as compare

            click.echo(compare(path, annotations, labelmap, excluded, action_thr).format())
            if out is None:
                return
        metrics = stage.score(path, annotations, labelmap, excluded, out, plots_dir, mode,
                              action_thr)
    else:
        if features is None or detections is None:
            raise click.UsageError("--model needs --features and --detections")
        i, n = parse_shard(shard)
        if n > 1 and predictions_out is None:
            raise click.UsageError("--shard needs --predictions-out")
        cfg = config(ctx, stage.EvalConfig, "eval", det_score_thr=det_score_thr)
        from pipeline.artifacts.annotations import read_annotations

        videos = set(read_annotations(annotations)["video_id"])
        warn(stage.det_score_check(detections, cfg.det_score_thr, "eval", strict, videos))
        metrics = stage.run(cfg, model, features, detections, annotations, labelmap, out,
                            predictions_out, excluded, plots_dir, (i, n), bank, mode,
                            action_thr)
        if n > 1:
            click.echo(f"predictions of shard {i}/{n} -> {predictions_out}")
            return
    click.echo(f"mAP {metrics['mAP']:.4f}  ({out}, {mode})")
