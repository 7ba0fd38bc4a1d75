from __future__ import annotations

import click

from .common import config, fail_if, int_list, renamed_option, stage_command


@stage_command("detect")
@click.argument("proposals", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--videos", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory of videos; video_id is the file stem.")
@click.option("--recursive", is_flag=True, help="Also the videos of subfolders (id: file stem).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output detections.parquet (video_id, timestamp, x1..y2, score).")
@click.option("--source", type=click.Choice(["yolo", "gt", "proposals"]), default=None,
              help="Where boxes come from")
@click.option("--annotations", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="AVA annotation CSV(s): the boxes for --source gt.  Repeatable.")
@click.option("--timestamps", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="yolo: detect exactly the (video_id, timestamp) pairs of these CSVs (AVA "
                   "annotations/proposals, or video_id,timestamp).  Repeatable.  "
                   "[one keyframe per second]")
@click.option("--weights", default=None,
              help="yolo: ultralytics weights name (downloads when online) or a path to any "
                   "ultralytics checkpoint")
@click.option("--classes", default=None, help="yolo: class ids that are persons, e.g. 0,1")
@click.option("--det-score-thr", type=float, default=None,
              help="Keep every box scoring at least this (a floor: bank, train and eval "
                   "each pick their own --det-score-thr)")
@renamed_option("--min-score", "--det-score-thr")
@click.option("--keyframe-interval", type=int, default=None,
              help="yolo: seconds between keyframes without --timestamps")
@click.option("--time-offset", type=int, default=None,
              help="timestamp = video time + offset (AVA 15-minute cuts: 900)")
@click.option("--batch-size", type=int, default=None, help="yolo: frames per batch")
@click.option("--imgsz", type=int, default=None, help="yolo: inference size")
@click.option("--device", default=None, help="yolo: auto, cpu or cuda[:i]")
@click.option("--half/--no-half", default=None, help="yolo: float16 on cuda")
@click.option("--allow-empty", is_flag=True,
              help="Write a table without rows when there is nothing to detect (else an "
                   "error: an empty videos folder, or no box, usually means a wrong input).")
@click.pass_context
def detect(ctx, proposals, videos, out, source, annotations, timestamps, weights, classes,
           det_score_thr, keyframe_interval, time_offset, batch_size, imgsz, device, half,
           allow_empty, recursive) -> None:
    """Find persons on keyframes and write detections.parquet.

    \b
      --source yolo       Ultralytics YOLO on one keyframe per second (or --timestamps)
      --source gt         the boxes of --annotations CSV(s), score 1.0
      --source proposals  import AVA/SlowFast proposals: acar detect --source proposals
                          FILE.csv --out det.parquet  (video,sec,x1,y1,x2,y2,,score)

    Boxes are normalised to [0, 1] of the original frame; every box scoring at least
    --det-score-thr is kept.  A video that cannot be read is reported, the others are still
    processed, and the command then exits non-zero with a summary of the failures.
    """
    from pipeline import detect as stage

    if proposals and source not in (None, "proposals"):
        raise click.UsageError("positional FILE arguments are proposals CSVs: use "
                               "--source proposals")
    cfg = config(ctx, stage.DetectConfig, "detect",
                 source=source or ("proposals" if proposals else None), weights=weights,
                 classes=int_list(classes), det_score_thr=det_score_thr,
                 keyframe_interval=keyframe_interval, time_offset=time_offset,
                 batch_size=batch_size, imgsz=imgsz, device=device, half=half)
    failures = stage.run(cfg, videos, out, annotations=list(annotations),
                         proposals=list(proposals), timestamps=list(timestamps),
                         allow_empty=allow_empty, recursive=recursive)
    fail_if(failures, "videos")
