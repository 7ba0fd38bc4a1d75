from __future__ import annotations

import click

from .common import config, stage_command


@stage_command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: videos/, train.csv, val.csv, labelmap.pbtxt, excluded.csv")
@click.option("--seed", type=int, default=None, help="World seed")
@click.pass_context
def synth(ctx: click.Context, out: str, seed: int | None) -> None:
    """Generate the default synthetic dataset (mp4 videos with AVA-format labels).

    Deterministic in its parameters (section `synth` of stages.yaml).
    """
    from pipeline import synth as stage

    stage.run(config(ctx, stage.SynthConfig, "synth", seed=seed), out)
