from __future__ import annotations

import click

from .common import config, int_list


@click.command()
@click.option("--videos", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory of videos; video_id is the file stem.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output detections.parquet (video_id, timestamp, x1..y2, score).")
@click.option("--source", type=click.Choice(["yolo", "gt", "proposals"]), default=None,
              help="Where boxes come from  [stages.yaml detect.source]")
@click.option("--annotations", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="AVA annotation CSV(s): the boxes for --source gt.  Repeatable.")
@click.option("--weights", default=None, help="yolo: weights name or path  [yolo11n.pt]")
@click.option("--classes", default=None, help="yolo: person class ids, e.g. 0,1  [0]")
@click.pass_context
def detect(ctx, videos, out, source, annotations, weights, classes) -> None:
    """Find persons on keyframes and write detections.parquet.

    Boxes are normalised to [0, 1] of the original frame.  With --source gt, the
    boxes of the annotation CSV(s) are written with score 1.0.
    """
    from pipeline import detect as stage

    cfg = config(ctx, stage.DetectConfig, "detect", source=source, weights=weights,
                 classes=int_list(classes))
    stage.run(cfg, videos, out, annotations=list(annotations))
