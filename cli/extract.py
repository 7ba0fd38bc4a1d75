from __future__ import annotations

import click

from .common import config, fail_if, int_list, parse_shard


@click.command()
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of videos; video_id is the file stem.")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False),
              help="detections.parquet: its keyframe timestamps are extracted.")
@click.option("--out", required=True, help="Feature store (Zarr v3): a path or fsspec URL.")
@click.option("--backbone", default=None, help="Backbone name  [r2plus1d_18]")
@click.option("--weights", default=None,
              help="Backbone weights: a state-dict path (offline) or a torchvision weights "
                   "name (downloads)  [torchvision Kinetics weights]")
@click.option("--random-init", is_flag=True, default=None,
              help="Use a randomly initialised backbone (seeded); recorded in the store.")
@click.option("--scales", default=None, help="Extra test-time scales, e.g. 288,320")
@click.option("--flip/--no-flip", default=None, help="Also write horizontally flipped views.")
@click.option("--shard", default=None, help="Process a deterministic 1/N of the videos: i/N.")
@click.pass_context
def extract(ctx, videos, detections, out, backbone, weights, random_init, scales, flip,
            shard) -> None:
    """Extract backbone features of every keyframe into a Zarr feature store.

    One (C, H, W) float16 map per keyframe and view, averaged over the clip's time.
    Videos already marked complete are skipped, so an interrupted run resumes.
    """
    from pipeline import extract as stage

    cfg = config(ctx, stage.ExtractConfig, "extract", backbone=backbone, weights=weights,
                 random_init=random_init, scales=int_list(scales), flip=flip)
    fail_if(stage.run(cfg, videos, detections, out, parse_shard(shard)), "videos")
