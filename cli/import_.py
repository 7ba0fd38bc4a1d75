"""``acar import``: an ACAR-Net model-zoo checkpoint -> an acar head checkpoint."""

from __future__ import annotations

import click


@click.command("import")
@click.argument("ckpt", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for head.pt (the acar checkpoint) and import.json")
@click.option("--labelmap", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The model's label map: AVA's 60-class list "
                   "(ava_action_list_v2.2_for_activitynet_2019.pbtxt)")
@click.option("--backbone", default=None,
              help="slowfast_r50 / slowfast_r101 (or a _16x8 variant)  [from the file]")
@click.option("--short-side", type=int, default=256, show_default=True,
              help="The features' scale (ACAR-Net: 256)")
@click.option("--time-offset", type=float, default=0.0, show_default=True,
              help="The extract run's --time-offset (AVA 15-minute cuts: 900)")
@click.option("--pad-multiple", type=int, default=None,
              help="The extract run's --pad-multiple  [extract's default: the "
                   "backbone's stride, 16]")
def import_cmd(ckpt, out_dir, labelmap, backbone, short_side, time_offset,
               pad_multiple) -> None:
    """Turn ACAR-Net checkpoint CKPT (backbone + neck + ACAR or linear head) into
    OUT/head.pt for `acar eval`.

    The checkpoint's backbone part is read by `acar extract --backbone slowfast_r50
    --weights CKPT` (the command is printed and kept in OUT/import.json); the head
    checkpoint records the feature spec that run writes, so eval takes those features.
    """
    from pipeline.import_ckpt import import_checkpoint

    record = import_checkpoint(ckpt, out_dir, labelmap, backbone, short_side, time_offset,
                               pad_multiple)
    click.echo(f"wrote {out_dir}/head.pt ({record['head']} head); features: "
               f"{record['extract']}")
