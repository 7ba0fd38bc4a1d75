"""The ``report`` stage: every head's AP per action family, side by side -> report.md/png.

The last stage of the DAG.  It reads each head's ``metrics.json`` (``acar eval``), the
validation ground truth and the label map, and writes into ``out_dir``:

``report.md``
    A table, one row per head (in the order given), one column per family, which is a
    label-map ``superclass`` (default ``pose``: actor, ``context``: actor-context,
    ``relation``: actor-context-actor, ``longterm``: long-term), plus overall mAP, all
    as AP x 100.  A **chance** row gives what random scores would reach: the AP of a
    random ranking is about the class's prevalence, so for each family it is the mean,
    over its classes with ground truth, of (#GT boxes with that class / #distinct GT
    boxes) -- the same averaging ``metrics.json`` uses for ``per_superclass``.  Families
    absent from the label map are left out (of the default list; a family named in
    ``families`` must be a superclass of the label map); a null AP prints as "–".

    Then "Orderings": the relations the ACRN/ACAR/LFB papers report, checked with
    measured margins wherever the heads involved are present (:data:`CHECKS`):
    linear is close to the best on pose, relational reasoning wins on context and
    relation classes, feature banks win on long-term ones.  A per-class ordering is
    checked on each class of its family apart (ids ``f.<class>``), from the heads'
    ``per_class.json`` (skipped, saying so, where a head has none or no AP for it).

``report.png``
    A grouped bar chart of the same numbers (groups: families and mAP; one colour per
    head; chance as a dashed line over each group).

``per_class_ap.png`` (when every head's ``per_class.json`` is beside its ``metrics.json``),
``train_loss.png`` and ``val_mAP.png`` (when ``logs`` are given)
    The static twins of ``dvc plots show``'s plots, every head in each
    (:mod:`pipeline.eval_plots`).

report.md and report.png are written atomically, together: a failure leaves the
previous pair.  :func:`run` also returns the numbers as a dict.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError
from .artifacts.annotations import person_boxes, read_annotations
from .artifacts.atomic import atomic_path
from .artifacts.labelmap import LabelMap, read_labelmap
from .artifacts.metrics import per_class_path, read_metrics, read_per_class
from .eval_plots import plot_curves, plot_per_class

FAMILIES = ["pose", "context", "relation", "longterm", "temporal", "target"]
FAMILY_NAMES = {"pose": "pose (actor)", "context": "context (actor–context)",
                "relation": "relation (actor–context–actor)", "longterm": "long-term",
                "temporal": "temporal (order of two actors' motions)",
                "target": "actor-target (beside the box)"}
MAP = "mAP"
RARE = "rare"   # a column of the checks only: the mean AP of the rare classes (ReportConfig)
ALL = "*"   # in a check: every head of the report
ENSEMBLES = "ensemble*"   # in a check's ``head``: every ensemble row (named ensemble_*, ens_*)


def is_ensemble(head: str) -> bool:
    """A report row of ``acar ensemble`` (methods/dvc.yaml: ensemble_<scheme>)."""
    return head.startswith(("ensemble", "ens_"))


@dataclass(frozen=True)
class Ordering:
    """One of the papers' orderings between heads, checked on one family, in AP points.

    ``kind``: ``ratio``: AP(head) / max AP(others) >= threshold; ``margin``: AP(head) -
    max AP(others) >= threshold; ``between``: AP(head) lies in [min, max] of others
    (margin to the nearer end >= threshold).  ``others`` may be :data:`ALL`: every other
    head of the report.  ``per_class``: checked on each class of ``family`` apart (its
    per-class APs), one result per class.  ``map_floor``: the check also needs
    mAP(head) - mAP(others) >= map_floor (decoupled fine-tuning: what it may cost).
    ``head`` :data:`ENSEMBLES`: the best ensemble row against the best of ``others``.
    ``classes``: with ``per_class``, only these classes of ``family`` (all when empty).
    ``required`` False: an observation, not an ordering: measured and shown (marked ○),
    but not among the orderings that must hold (the README gives the measurements why).
    """

    id: str
    family: str
    kind: str
    head: str
    others: tuple[str, ...] | str
    threshold: float
    statement: str
    per_class: bool = False
    map_floor: float | None = None
    classes: tuple[str, ...] = ()
    required: bool = True


CHECKS: list[Ordering] = [
    Ordering("a", "pose", "ratio", "linear", ALL, 0.8,
             "linear reaches ≥ 80% of the best head's AP on pose"),
    Ordering("b", "context", "margin", "acrn", ("linear",), 10.0,
             "acrn − linear ≥ 10 AP points on context"),
    Ordering("c", "relation", "margin", "acar", ("linear", "actor_actor", "acrn"), 10.0,
             "acar − max(linear, actor_actor, acrn) ≥ 10 AP points on relation"),
    Ordering("d", "longterm", "margin", "acfb", ("acar",), 10.0,
             "acfb − acar ≥ 10 AP points on longterm"),
    Ordering("e", "longterm", "between", "lfb", ("acar", "acfb"), 0.0,
             "lfb lies between acar and acfb on longterm"),
    Ordering("f", "longterm", "margin", "acfb", ("acar",), 10.0,
             "acfb − acar ≥ 10 AP points on each longterm class", per_class=True),
    # issue 17, item 9 (the grown world, synth.grow): the other challenge entries' methods.
    # Thresholds: the provisional one where all three seeds of bench/results/world_grown.json
    # clear it, else the largest of 5, 3 and 1 AP points that they all clear (h, k, k2)
    Ordering("g1", "relation", "margin", "t_only", ("linear",), 10.0,
             "t_only − linear ≥ 10 AP points on relation"),
    Ordering("g2", "relation", "margin", "s_only", ("linear",), 10.0,
             "s_only − linear ≥ 10 AP points on relation"),
    Ordering("h", "temporal", "margin", "t_only", ("s_only", "acar"), 5.0,
             "t_only − max(s_only, acar) ≥ 5 AP points on temporal"),
    Ordering("i", "longterm", "margin", "t_only_mem", ("t_only",), 3.0,
             "t_only with memory − t_only ≥ 3 AP points on longterm"),
    Ordering("j1", RARE, "margin", "linear_cb", ("linear",), 0.0,
             "decoupled fine-tuning of linear raises the rare classes' mean AP, mAP drops "
             "≤ 1", map_floor=-1.0),
    # an observation: no schedule of stage two raised acar's rare classes on every seed
    # (README, "Decoupled fine-tuning of acar: what was tried"); the ordering is j1
    Ordering("j2", RARE, "margin", "acar_cb", ("acar",), 0.0,
             "decoupled fine-tuning of acar raises the rare classes' mean AP, mAP drops ≤ 1",
             map_floor=-1.0, required=False),
    Ordering("k", "target", "margin", "atr", ("linear",), 5.0,
             "atr − linear ≥ 5 AP points on target"),
    # the context classes whose object lies beside the box, out of it (the fire, the wheel)
    Ordering("k2", "context", "margin", "atr", ("linear",), 5.0,
             "atr − linear ≥ 5 AP points on each context class whose object lies beside the "
             "box (warm, drive)", per_class=True, classes=("warm", "drive")),
    Ordering("l", MAP, "margin", ENSEMBLES, ALL, 0.0,
             "the best ensemble's mAP ≥ the best single head's"),
]


@dataclass
class ReportConfig:
    """stages.yaml ``report``."""

    title: str = "AP per action family"
    families: list[str] = field(default_factory=lambda: list(FAMILIES))  # label-map superclasses
    family_names: dict[str, str] = field(default_factory=dict)  # display names (else built-in)
    # the rare classes of the checks' "rare" column: under this share of the ground-truth
    # boxes of the training split (``--train-annotations``; issue 17 and Kang et al. rank
    # classes by their training samples), else of the report's ``--annotations``
    rare_share: float = 0.02

    def __post_init__(self) -> None:
        if not isinstance(self.title, str):
            raise ArtifactError("report.title", f"must be a string, got {self.title!r}")
        if not (isinstance(self.families, (list, tuple))
                and all(isinstance(f, str) for f in self.families)):
            raise ArtifactError("report.families", "must be a list of label-map superclasses, "
                                f"got {self.families!r}")
        if isinstance(self.rare_share, bool) or not isinstance(self.rare_share, (int, float)) \
                or not 0 < self.rare_share < 1:
            raise ArtifactError("report.rare_share", f"must be a share in (0, 1), got "
                                                     f"{self.rare_share!r}")
        if not (isinstance(self.family_names, dict)
                and all(isinstance(v, str) for v in self.family_names.values())):
            raise ArtifactError("report.family_names", "must map superclasses to display "
                                f"names, got {self.family_names!r}")


def _prevalence(annotations: str | os.PathLike, labelmap: LabelMap,
                needed_for: str) -> dict[int, float]:
    """Each label-map class id's share of the distinct GT boxes (person-keyframes) of
    ``annotations``; an empty file is an error naming what it was ``needed_for``."""
    df = read_annotations(annotations)
    if df.empty:
        raise ArtifactError(annotations, f"no ground-truth box: {needed_for}")
    boxes = person_boxes(df, {int(a): int(a) for a in df["action_id"].unique()})
    positives = {a: 0 for a in labelmap.ids}
    for labels in boxes["labels"]:
        for a in labels:
            if a in positives:
                positives[a] += 1
    return {a: positives[a] / len(boxes) for a in labelmap.ids}


def chance(annotations: str | os.PathLike, labelmap: LabelMap,
           families: list[str]) -> dict[str, float | None]:
    """AP x 100 of random scores per family (and ``mAP``): mean prevalence of its classes."""
    rate = {a: r for a, r in _prevalence(annotations, labelmap, "the chance row needs the "
                                         "validation annotations").items() if r > 0}
    out: dict[str, float | None] = {}
    for fam in [*families, MAP]:
        vals = [r for a, r in rate.items()
                if fam == MAP or labelmap.superclasses[labelmap.index[a]] == fam]
        out[fam] = 100.0 * float(np.mean(vals)) if vals else None
    return out


def class_shares(annotations: str | os.PathLike, labelmap: LabelMap) -> dict[str, float]:
    """Each class's share of the distinct GT boxes (person-keyframes) of ``annotations``."""
    rate = _prevalence(annotations, labelmap, "the rare classes are counted on it")
    return {labelmap.name(a): r for a, r in rate.items()}


def rare_classes(annotations: str | os.PathLike, labelmap: LabelMap,
                 share: float) -> list[str]:
    """The classes with ground truth on fewer than ``share`` of the distinct GT boxes of
    ``annotations`` (none at all: not a class of this data), rarest first."""
    return rare_of(class_shares(annotations, labelmap), labelmap, share)


def rare_of(shares: dict[str, float], labelmap: LabelMap, share: float) -> list[str]:
    """The names whose share (``class_shares``) is in (0, ``share``), rarest first."""
    order = {n: i for i, n in enumerate(labelmap.names)}
    return sorted((n for n, s in shares.items() if 0 < s < share),
                  key=lambda n: (shares[n], order[n]))


def _check(check: Ordering, table: dict[str, dict[str, float | None]],
           families: list[str]) -> dict:
    key, fam, kind, head, thr, statement = (check.id, check.family, check.kind, check.head,
                                            check.threshold, check.statement)
    if head == ENSEMBLES:          # the best ensemble row against the best single head
        group = [h for h in table if is_ensemble(h)]
        if group:
            head = max(group, key=lambda h: -np.inf if table[h].get(fam) is None
                       else table[h][fam])
        others = [h for h in table if not is_ensemble(h)] if check.others == ALL \
            else list(check.others)
    else:
        others = [h for h in table if h != head] if check.others == ALL \
            else list(check.others)
    res = {"id": key, "statement": statement, "family": fam, "kind": kind, "head": head,
           "others": others, "threshold": thr, "values": {}, "measured": None,
           "passed": None, "skipped": None, "required": check.required}
    missing = [h for h in [head, *others] if h not in table]
    if head == ENSEMBLES:
        res["skipped"] = "no ensemble in the report"
    elif fam not in families and fam not in (MAP, RARE):
        res["skipped"] = f"no '{fam}' classes in the label map"
    elif fam == RARE and not missing and all(table[h].get(RARE) is None
                                             for h in [head, *others]):
        res["skipped"] = "no AP of a rare class (report.rare_share)"
    elif missing or not others:
        res["skipped"] = f"no {', '.join(missing) or 'other heads'} in the report"
    else:
        values = {h: table[h].get(fam) for h in [head, *others]}
        res["values"] = values
        null = [h for h, v in values.items() if v is None]
        if null:
            res["skipped"] = f"no {fam} AP for {', '.join(null)}"
        else:
            v, rest = values[head], [values[h] for h in others]
            if kind == "ratio":
                res["measured"] = v / max(rest) if max(rest) > 0 else None
                if res["measured"] is None:
                    res["skipped"] = f"every {fam} AP is 0"
            elif kind == "margin":
                res["measured"] = v - max(rest)
            elif kind == "between":
                res["measured"] = min(v - min(rest), max(rest) - v)
            else:
                raise ValueError(f"unknown check kind '{kind}'")
            if res["measured"] is not None:
                res["passed"] = bool(res["measured"] >= thr)
            if check.map_floor is not None and res["measured"] is not None:
                maps = [table[h].get(MAP) for h in [head, *others]]
                if None in maps:
                    res.update(skipped=f"no {MAP} for a head", passed=None, measured=None)
                else:
                    res["map_change"] = maps[0] - max(maps[1:])
                    res["map_floor"] = check.map_floor
                    res["passed"] = bool(res["passed"]
                                         and res["map_change"] >= check.map_floor)
    return res


def check_table(table: dict[str, dict[str, float | None]], families: list[str]) -> list[dict]:
    """The family-level orderings of :data:`CHECKS` on ``table``: head -> {family, ``mAP``,
    ``rare``: AP x 100} (e.g. bench/world.py's rows, per seed), then the per-class ones that
    name their classes, on those classes' APs where the rows carry them (key: the class)."""
    out = [_check(c, table, families) for c in CHECKS if not c.per_class]
    for c in CHECKS:                # per-class checks of named classes, on their class APs
        if c.per_class and c.classes and c.family in families:
            for name in c.classes:
                one = replace(c, id=f"{c.id}.{name}", family=name, statement=_one_class(c, name))
                out.append({**_check(one, table, [name]), "family": c.family})
    return out


def _check_classes(check: Ordering, classes: dict[str, dict[str, float | None] | None],
                   labelmap: LabelMap, families: list[str]) -> list[dict]:
    """A per-class ordering: one :func:`_check` result per class of its family, on the
    heads' per-class APs x 100 (``classes``: head -> class name -> AP, None: the head has
    no per_class.json)."""
    names = [n for n, s in zip(labelmap.names, labelmap.superclasses, strict=True)
             if s == check.family and (not check.classes or n in check.classes)]
    if check.family not in families or not names:
        return [_check(check, {}, families)]
    out = []
    for name in names:
        one = replace(check, id=f"{check.id}.{name}", family=name,
                      statement=_one_class(check, name))
        heads = [check.head, *([] if check.others == ALL else check.others)]
        absent = [h for h in heads if h in classes and classes[h] is None]
        res = _check(one, {h: {name: (c or {}).get(name)} for h, c in classes.items()},
                     [name])
        res["family"] = check.family
        if absent:
            res.update(skipped=f"no per_class.json for {', '.join(absent)}", passed=None,
                       measured=None, values={})
        out.append(res)
    return out


def _one_class(check: Ordering, name: str) -> str:
    """A per-class ordering's statement for one of its classes."""
    text = check.statement.replace("each ", "").replace(f"{check.family} class",
                                                         f"{check.family} class '{name}'")
    return text.split(" whose ")[0] if check.classes else text


def _mean_of(ap: dict[str, float | None] | None, names: list[str]) -> float | None:
    """The mean of the APs of ``names`` that ``ap`` has (None: none, or no per_class.json)."""
    vals = [ap[n] for n in names if ap is not None and ap.get(n) is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _check_line(c: dict) -> str:
    head = f"**({c['id']})** {c['statement']}"
    if c["skipped"]:
        return f"- – {head}: skipped ({c['skipped']})"
    vals = c["values"]
    mark = "✓" if c["passed"] else "✗"
    if c["kind"] == "ratio":
        best = max(c["others"], key=lambda h: vals[h])
        nums = (f"{c['head']} {_fmt(vals[c['head']])}, best {best} {_fmt(vals[best])} → "
                f"{100 * c['measured']:.0f}% of best (needs ≥ {100 * c['threshold']:.0f}%)")
    elif c["kind"] == "margin":
        nums = ", ".join(f"{h} {_fmt(vals[h])}" for h in [c["head"], *c["others"]])
        nums += f" → margin {c['measured']:+.1f} (needs ≥ {c['threshold']:+.1f})"
        if "map_change" in c:
            nums += f"; mAP {c['map_change']:+.1f} (needs ≥ {c['map_floor']:+.1f})"
    else:
        lo, hi = sorted(c["others"], key=lambda h: vals[h])
        nums = (f"{lo} {_fmt(vals[lo])} ≤ {c['head']} {_fmt(vals[c['head']])} ≤ {hi} "
                f"{_fmt(vals[hi])} → margin to the nearer end {c['measured']:+.1f} "
                f"(needs ≥ {c['threshold']:+.1f})")
    if not c["required"]:
        return (f"- ○ {head}: {nums}; an observation, not an ordering: it "
                f"{'holds' if c['passed'] else 'does not hold'} here")
    return f"- {mark} {head}: {nums}"


def _markdown(cfg: ReportConfig, report: dict) -> str:
    fams, names = report["families"], report["family_names"]
    cols = [*fams, MAP]
    lines = [f"# {cfg.title}", "",
             "AP × 100 on the validation set, per action family (label-map superclass) and "
             "overall (frame-mAP at IoU 0.5). *chance*: the AP random scores would reach "
             "(mean class prevalence among the ground-truth boxes).", "",
             "| head | " + " | ".join(names[c] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for head, row in report["table"].items():
        lines.append(f"| {head} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    lines.append("| *chance* | " + " | ".join(f"*{_fmt(report['chance'][c])}*" for c in cols)
                 + " |")
    lines += ["", "## Orderings", ""]
    if report.get("rare"):
        shares = report["rare_shares"]
        listed = ", ".join(f"{n} ({100 * shares[n]:.2f}%)" for n in report["rare"])
        lines += [f"Rare classes (under {100 * cfg.rare_share:g}% of the boxes of "
                  f"{report['rare_split']}; \"rare\": their mean AP): {listed}.", ""]
    if any(not c["required"] and not c["skipped"] for c in report["orderings"]):
        lines += ["○: an observation, not an ordering: measured and shown, not required to "
                  "hold (the README gives the measurements why).", ""]
    lines += [_check_line(c) for c in report["orderings"]]
    return "\n".join(lines) + "\n"


def _plot(cfg: ReportConfig, report: dict, path: Path) -> None:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = [*report["families"], MAP]
    heads = list(report["table"])
    fig = Figure(figsize=(10, 5.5), dpi=100)     # 1000 px wide
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(cols))
    width = 0.8 / max(len(heads), 1)
    cmap = colormaps["tab10"]
    top = 0.0
    for i, head in enumerate(heads):
        vals = [report["table"][head][c] for c in cols]
        ys = [np.nan if v is None else v for v in vals]
        bars = ax.bar(x - 0.4 + (i + 0.5) * width, ys, width * 0.92, label=head,
                      color=cmap(i % 10))
        ax.bar_label(bars, labels=["" if v is None else f"{v:.0f}" for v in vals],
                     fontsize=7, padding=1)
        top = max([top, *(v for v in vals if v is not None)])
    label = "chance"
    for j, c in enumerate(cols):
        v = report["chance"][c]
        if v is not None:
            ax.hlines(v, x[j] - 0.45, x[j] + 0.45, colors="black", linestyles="dashed",
                      linewidth=1.5, label=label, zorder=3)
            label, top = "_nolegend_", max(top, v)
    ax.set_xticks(x, [report["family_names"][c].replace(" (", "\n(") for c in cols],
                  fontsize=10)
    ax.set_ylabel("AP (%)", fontsize=11)
    ax.set_ylim(0, max(10.0, min(100.0, top * 1.15 + 2)))
    ax.set_title(cfg.title, fontsize=13)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=9, ncol=min(len(heads) + 1, 7), loc="upper center",
              bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")


def run(cfg: ReportConfig, metrics: dict[str, str | os.PathLike],
        annotations: str | os.PathLike, labelmap: str | os.PathLike,
        out_dir: str | os.PathLike,
        logs: dict[str, str | os.PathLike] | None = None,
        train_annotations: str | os.PathLike | None = None) -> dict:
    """Write ``report.md`` and ``report.png`` (and the plots' PNGs) into ``out_dir``; return
    the numbers.

    ``metrics`` maps head name -> its ``metrics.json`` (rows keep this order); ``logs``
    head name -> its training log (``acar train --log``); the rare classes are counted on
    ``train_annotations`` (the training split), else on ``annotations``.
    """
    lm = read_labelmap(labelmap)
    runs = {head: read_metrics(path) for head, path in metrics.items()}
    ids = {str(a) for a in lm.ids}
    for path in metrics.values():       # another dataset's metrics would print as "–"
        per_class = per_class_path(path)
        classes = set(read_per_class(per_class)) if per_class.exists() else set()
        if classes - ids:
            raise ArtifactError(path, f"scored with another label map than {labelmap} (its "
                                      f"classes {', '.join(sorted(classes - ids)[:5]) or '-'} "
                                      f"are not in it; missing {len(ids - classes)})")
    if list(cfg.families) != FAMILIES:     # the default leaves out what the label map lacks
        unknown = [f for f in cfg.families if f not in lm.superclasses]
        if unknown:
            raise ArtifactError("report.families", f"'{unknown[0]}' is not a superclass of "
                                f"{labelmap} (its: {', '.join(dict.fromkeys(lm.superclasses))})")
    families = [f for f in cfg.families if f in lm.superclasses]
    names = {**FAMILY_NAMES, **cfg.family_names}
    table = {}
    for head, m in runs.items():
        row = {f: None if m["per_superclass"].get(f) is None
               else 100.0 * m["per_superclass"][f] for f in families}
        row[MAP] = None if m["mAP"] is None else 100.0 * m["mAP"]
        table[head] = row
    report = {"title": cfg.title, "families": families,
              "family_names": {c: names.get(c, c) for c in [*families, MAP]},
              "table": table, "chance": chance(annotations, lm, families)}
    classes = {head: per_class_path(path) for head, path in metrics.items()}
    class_ap = {head: None if not p.exists() else
                {c["name"]: None if c["ap"] is None else 100.0 * c["ap"]
                 for c in read_per_class(p).values()} for head, p in classes.items()}
    report["per_class"] = class_ap
    counted = annotations if train_annotations is None else train_annotations
    report["rare_split"] = Path(counted).name
    report["rare_shares"] = shares = class_shares(counted, lm)
    report["rare"] = rare = rare_of(shares, lm, cfg.rare_share)
    checked = {head: {**row, RARE: _mean_of(class_ap[head], rare)} for head, row in table.items()}
    report["orderings"] = [r for c in CHECKS for r in (
        _check_classes(c, class_ap, lm, families) if c.per_class
        else [_check(c, checked, families)])]
    out_dir = Path(out_dir)
    markdown = _markdown(cfg, report)
    with ExitStack() as stack:  # both renamed into place only when both are written
        md = stack.enter_context(atomic_path(out_dir / "report.md"))
        png = stack.enter_context(atomic_path(out_dir / "report.png"))
        md.write_text(markdown)
        _plot(cfg, report, png)
    if all(p.exists() for p in classes.values()):
        plot_per_class({head: read_per_class(p) for head, p in classes.items()},
                       out_dir / "per_class_ap.png")
    if logs:
        plot_curves(logs, "loss", "training loss", out_dir / "train_loss.png")
        plot_curves(logs, "val_mAP", "validation frame-mAP", out_dir / "val_mAP.png")
    return report
