"""The ``acar`` command: a click group whose subcommands only parse and call stages."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import click

from pipeline.artifacts import ArtifactError

from .bank import bank
from .classify import classify
from .demo import demo
from .detect import detect
from .ensemble import ensemble
from .evaluate import eval_cmd
from .extract import extract
from .fuse import fuse
from .import_ import import_cmd
from .report import report
from .synth import synth
from .train import train
from .viz import viz


def _version() -> str:
    try:
        return version("acar")
    except PackageNotFoundError:      # run from a source tree that is not installed
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", prog_name="acar", message="%(prog)s %(version)s")
@click.option("--params", type=click.Path(dir_okay=False), default=None, envvar="ACAR_PARAMS",
              help="Parameter file with one section per stage (also accepted after the "
                   "subcommand: acar STAGE --params FILE)  [default: ./stages.yaml if "
                   "present, else built-in defaults]")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch/OpenMP threads of this process  [default: OMP_NUM_THREADS, else "
                   "SLURM_CPUS_PER_TASK, else usable CPUs / ACAR_JOBS (pipeline/threads.py)]")
@click.pass_context
def cli(ctx: click.Context, params: str | None, threads: int | None) -> None:
    """acar: cache-first spatio-temporal action localization (AVA-style).

    Stages run in order, each reading the artifacts of the previous ones:

    \b
      synth    make the default synthetic dataset (videos + AVA labels)
      detect   persons on keyframes            -> detections.parquet
      extract  backbone features per keyframe  -> features.zarr
      bank     long-term feature banks         -> bank.zarr
      train    a head on cached features       -> model.pt
      eval     predictions + frame-mAP         -> metrics.json
      ensemble several heads' predictions      -> predictions.csv (+ .parquet)
      viz      draw predictions over videos    -> <video>_actions.mp4
      demo     actions on any video file       -> <name>_actions.mp4 (+ heatmaps)
      report   compare the heads per family    -> report.md, report.png

    `acar classify VIDEO` checks a backbone: its Kinetics-400 labels, every second.

    Every option defaults from its stage's section in stages.yaml (`acar STAGE --help`
    shows the value a run would use), else the stage's dataclass; flags override it.  A
    misspelled section, head or key in the file is an error.  Each stage prints (stderr)
    the settings that differ from its built-in defaults and where each came from.  Outside
    this repository's DAG, pass --params FILE (or run where no stages.yaml is) so that the
    toy world's values do not leak into your run.  `dvc repro` runs the whole DAG
    (dvc.yaml).
    """
    from pipeline.threads import setup

    ctx.obj = {"params": params, "threads": setup(threads)[0]}


for command in (synth, detect, extract, bank, train, eval_cmd, report, viz, demo,
                classify, import_cmd, fuse, ensemble):
    cli.add_command(command)


def show_error(err: click.ClickException) -> None:
    """click's message, as every other error: ``error: ...`` (a usage error first shows
    the command's usage line and where to find its help)."""
    ctx = getattr(err, "ctx", None)
    if isinstance(err, click.UsageError) and ctx is not None:
        click.echo(ctx.get_usage(), err=True)
        if ctx.command.get_help_option(ctx) is not None:
            names = ctx.help_option_names[0]
            click.echo(f"Try '{ctx.command_path} {names}' for help.", err=True)
        click.echo(err=True)
    click.echo(f"error: {err.format_message()}", err=True)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except ArtifactError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        show_error(err)
        sys.exit(err.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
