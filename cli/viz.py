from __future__ import annotations

import click

from .common import config, renamed_option, stage_command


@stage_command("viz")
@click.option("--predictions", default=None, type=click.Path(exists=True, dir_okay=False),
              help="AVA result CSV (video_id, timestamp, x1..y2, action_id, score).")
@click.option("--detections", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Instead of --predictions: a detections.parquet (acar detect), drawn as "
                   "boxes with their scores, before any model exists: "
                   "OUT/<video_id>_detections.mp4 (--det-score-thr: the lowest score drawn).")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of videos; video_id is the file stem.")
@click.option("--annotations", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Ground truth CSV: drawn side by side with the predictions.")
@click.option("--labelmap", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Label map, for class names (otherwise ids are shown).")
@click.option("--out", "out_dir", default="viz", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")
@click.option("--action-score-thr", type=float, default=None,
              help="Minimum action score drawn (--predictions)")
@click.option("--det-score-thr", type=float, default=None,
              help="Minimum person score drawn (--detections)")
@renamed_option("--threshold", "--action-score-thr")
@click.option("--top-k", type=int, default=None, help="Actions per person")
@click.pass_context
def viz(ctx, predictions, detections, videos, annotations, labelmap, out_dir,
        action_score_thr, det_score_thr, top_k) -> None:
    """Render an AVA predictions file over its videos: OUT/<video_id>_actions.mp4.

    Each person keeps one box colour over the keyframes; labels take their class's colour.
    With --annotations, prediction and ground truth are shown side by side, to
    inspect errors on your own val set.  With --detections instead of --predictions,
    the person boxes and their scores: OUT/<video_id>_detections.mp4.
    """
    from pipeline import viz as stage
    from pipeline.artifacts.annotations import read_annotations
    from pipeline.artifacts.labelmap import read_labelmap
    from pipeline.artifacts.predictions import check_values, read_predictions
    from pipeline.video import list_videos

    if (predictions is None) == (detections is None):
        raise click.UsageError("give one of --predictions or --detections")
    cfg = config(ctx, stage.VizConfig, "viz", action_score_thr=action_score_thr,
                 det_score_thr=det_score_thr, top_k=top_k)
    if detections is not None:
        from pipeline.artifacts.detections import read_detections

        if annotations:
            raise click.UsageError("--annotations goes with --predictions, not --detections")
        outs = stage.run_detections(cfg, read_detections(detections)[0], list_videos(videos),
                                    out_dir)
        if not outs:
            raise click.ClickException(f"no video in {videos} has a detection of {detections} "
                                       f"scoring >= {cfg.det_score_thr}")
        for p in outs:
            click.echo(p)
        return
    pred = read_predictions(predictions)
    check_values(pred, predictions)
    outs = stage.run(cfg, pred, list_videos(videos), out_dir,
                     read_labelmap(labelmap) if labelmap else None,
                     read_annotations(annotations) if annotations else None)
    if not outs:
        raise click.ClickException(f"no video in {videos} matches a video_id of {predictions}")
    for p in outs:
        click.echo(p)
