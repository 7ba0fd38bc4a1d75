"""Evaluation plots: ``per_class_ap.csv`` (DVC bar chart) and ``pr_curves.png`` of one head;
and the heads side by side as static PNGs (matplotlib, readable offline, unlike the HTML of
``dvc plots show``, which loads vega from a CDN): one per quantity, drawn by ``acar report``
(:func:`plot_curves` for a training-log column, :func:`plot_per_class`)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts.atomic import atomic_path
from .artifacts.labelmap import LabelMap

if TYPE_CHECKING:
    from .ava_eval import EvalResult

PER_CLASS_COLUMNS = ["action_id", "name", "ap", "num_gt"]
PLOT_FILES = ("per_class_ap.csv", "pr_curves.png")  # the files of a plots folder


def write_plots(result: EvalResult, labelmap: LabelMap,
                paths: str | os.PathLike | Mapping[str, str | os.PathLike],
                top: int = 10, head: str | None = None) -> None:
    """Write the :data:`PLOT_FILES` into the folder ``paths``, or each to ``paths[name]``;
    ``head`` (the model's head) starts the curves' title."""
    if not isinstance(paths, Mapping):
        paths = {name: Path(paths) / name for name in PLOT_FILES}
    write_per_class_ap(result, labelmap, paths["per_class_ap.csv"])
    plot_pr_curves(result, labelmap, paths["pr_curves.png"], top=top, head=head)


def write_per_class_ap(result: EvalResult, labelmap: LabelMap,
                       path: str | os.PathLike) -> None:
    """One row per label-map class; ``ap`` is empty for a class without GT."""
    per_class = result.metrics["per_class"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PER_CLASS_COLUMNS)
        for a in labelmap.ids:
            row = per_class[str(a)]
            ap = "" if row["ap"] is None else f"{row['ap']:.6f}"
            writer.writerow([a, row["name"], ap, row["num_gt"]])


def plot_pr_curves(result: EvalResult, labelmap: LabelMap, path: str | os.PathLike,
                   top: int = 10, head: str | None = None) -> None:
    """Precision-recall curves of the ``top`` classes with most GT (Agg backend, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_class = result.metrics["per_class"]
    ids = sorted((a for a in labelmap.ids if per_class[str(a)]["num_gt"] > 0),
                 key=lambda a: (-per_class[str(a)]["num_gt"], a))[:top]
    fig = Figure(figsize=(7, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for a in ids:
        info = per_class[str(a)]
        recall, precision = result.recall.get(a), result.precision.get(a)
        label = f"{info['name'][:28]} (AP {info['ap']:.3f}, {info['num_gt']} GT)"
        if recall is None or not len(recall):
            ax.plot([], [], label=label)
            continue
        ax.step([0.0, *recall], [precision[0], *precision], where="post", label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=(f"{head}: p" if head else "P")
           + f"recision-recall, {len(ids)} classes with most GT "
             f"(frame-mAP {result.metrics['mAP']:.4f})")
    ax.grid(alpha=0.3)
    if ids:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(logs: Mapping[str, str | os.PathLike], column: str, ylabel: str,
                path: str | os.PathLike, title: str | None = None) -> None:
    """One line per head of a training log's ``column`` (``loss``, ``val_mAP``) over epochs;
    rows where it is empty (no validation that epoch) are skipped."""
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    for head, log in logs.items():
        with open(log, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(column, "") != ""]
        ax.plot([int(r["epoch"]) for r in rows], [float(r[column]) for r in rows],
                marker="o", markersize=3, label=head)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=ylabel,
           title=title or f"{ylabel[:1].upper()}{ylabel[1:]} per epoch: {', '.join(logs)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_per_class(per_class: Mapping[str, Mapping[str, dict]], path: str | os.PathLike,
                   title: str | None = None) -> None:
    """Grouped horizontal bars: one group per class with GT (``per_class.json`` rows, in the
    first head's order), one bar per head; a class without GT is left out."""
    import numpy as np

    heads = list(per_class)
    first = per_class[heads[0]] if heads else {}
    ids = [a for a, row in first.items() if row.get("num_gt", 0) > 0]
    fig = _figure(8, max(3.0, 1.2 + 0.12 * len(ids) * max(len(heads), 1) + 0.15 * len(ids)))
    ax = fig.add_subplot()
    y = np.arange(len(ids))
    height = 0.8 / max(len(heads), 1)
    for i, head in enumerate(heads):
        aps = [per_class[head].get(a, {}).get("ap") for a in ids]
        ax.barh(y - 0.4 + (i + 0.5) * height, [np.nan if v is None else v for v in aps],
                height * 0.92, label=head)
    ax.set_yticks(y, [f"{first[a]['name'][:24]} ({first[a]['num_gt']})" for a in ids],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="AP (frame-AP@0.5)", ylabel="class (GT boxes)", xlim=(0, 1),
           title=title or f"Per-class AP: {', '.join(heads)}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
