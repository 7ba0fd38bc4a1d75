from __future__ import annotations

import json

import click


@click.command("classify")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--backbone", default="i3d", show_default=True,
              help="A backbone with a Kinetics-400 classifier (i3d; the torchvision ones "
                   "with their weights).")
@click.option("--weights", default=None,
              help="Weights name or file  [the backbone's default: i3d kinetics400]")
@click.option("--frames", type=int, default=None,
              help="Frames per clip  [the weights' official preprocessing]")
@click.option("--short-side", type=int, default=None, help="Resize the short side to this")
@click.option("--crop", type=int, default=None, help="Centre crop side")
@click.option("--times", default=None,
              help="Keyframes (s), comma-separated, e.g. 2,5.5  [every whole second]")
@click.option("--top", type=int, default=5, show_default=True, help="Labels per keyframe")
@click.option("--json", "as_json", is_flag=True,
              help='Print [{"t": seconds, "top5": [[label, prob], ...]}, ...] to stdout.')
def classify(video, backbone, weights, frames, short_side, crop, times, top, as_json) -> None:
    """Kinetics-400 top labels of VIDEO, one clip per keyframe (every second).

    The quick check that a backbone and its weights are loaded right: with the official
    preprocessing (i3d: short side 256, centre crop 224, 64 frames at the video's rate,
    RGB in [-1, 1]) each keyframe's clip gets the backbone's own classifier.
    """
    from pipeline import classify as tool

    try:
        stamps = tuple(float(v) for v in times.split(",")) if times else None
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of seconds: {times!r}",
                                 param_hint="--times") from None
    cfg = tool.ClassifyConfig(backbone=backbone, weights=weights, frames=frames,
                              short_side=short_side, crop=crop, times=stamps, top=top)
    results = tool.run(video, cfg)
    click.echo(json.dumps(results) if as_json else tool.format_table(results))
