from __future__ import annotations

import click

from .common import config, renamed_option, stage_command


@stage_command("viz")
@click.option("--predictions", required=True, type=click.Path(exists=True, dir_okay=False),
              help="AVA result CSV (video_id, timestamp, x1..y2, action_id, score).")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of videos; video_id is the file stem.")
@click.option("--annotations", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Ground truth CSV: drawn side by side with the predictions.")
@click.option("--labelmap", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Label map, for class names (otherwise ids are shown).")
@click.option("--out", "out_dir", default="viz", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")
@click.option("--action-score-thr", type=float, default=None, help="Minimum score drawn")
@renamed_option("--threshold", "--action-score-thr")
@click.option("--top-k", type=int, default=None, help="Actions per person")
@click.pass_context
def viz(ctx, predictions, videos, annotations, labelmap, out_dir, action_score_thr,
        top_k) -> None:
    """Render an AVA predictions file over its videos: OUT/<video_id>_actions.mp4.

    With --annotations, prediction and ground truth are shown side by side, to
    inspect errors on your own val set.
    """
    from pipeline import viz as stage
    from pipeline.artifacts.annotations import read_annotations
    from pipeline.artifacts.labelmap import read_labelmap
    from pipeline.artifacts.predictions import check_values, read_predictions
    from pipeline.video import list_videos

    cfg = config(ctx, stage.VizConfig, "viz", action_score_thr=action_score_thr, top_k=top_k)
    pred = read_predictions(predictions)
    check_values(pred, predictions)
    outs = stage.run(cfg, pred, list_videos(videos), out_dir,
                     read_labelmap(labelmap) if labelmap else None,
                     read_annotations(annotations) if annotations else None)
    if not outs:
        raise click.ClickException(f"no video in {videos} matches a video_id of {predictions}")
    for p in outs:
        click.echo(p)
