"""Seeded trap cases for the eval modes (``acar eval --mode``), and how to write them out.

Each case exercises every switch of :class:`pipeline.ava_eval.EvalMode`:

* ``cap``: crowded frames with more than 50 predictions of label-map classes;
* ``exclusions``: excluded frames holding GT and predictions (mmaction2 still counts that GT);
* ``unlabelled``: predictions on frames without GT, on frames whose GT rows are all of classes
  outside the label map (present for the 2020 tool, empty for mmaction2), and, in the 2020
  files, on frames listed by a 2-column ``video_id,timestamp`` row;
* ``timestamps``: ``0902`` next to ``902``; ``decimal`` cases add fractional timestamps
  (``902.5``, and ``902.000000`` == ``902``), which only the 2020 tool reads;
* ``float32``: predictions whose IoU with a GT box is 0.5 in exact arithmetic, so that
  rounding decides the match;
* ``drop_degenerate``: predictions with ``x1 == x2`` or ``y1 == y2``;
* ``classes``: a class with GT and no prediction, a class with predictions and no GT;
* ``sort``: each frame's rows in a random order, several predictions on one GT box;
* ``gt_order``: a frame where a prediction has the same IoU with two GT boxes and the GT
  order decides which it takes (:func:`_tie_trap`); dyadic boxes add more exact IoU ties.

Scores are distinct, also in float32 (multiples of 2**-14), so that every tool's result is
defined; tolerance 1e-9.  The reference values in ``tests/data/eval_modes/reference.json``
were produced by running each tool's own evaluation code on the written files (in a scratch
folder outside the repository; see that folder's ``README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABELS = (1, 3, 4, 7, 9)
NAMES = ("bend", "crouch", "dance", "carry", "talk")
UNKNOWN = (2, 99)


@dataclass
class Case:
    gt: list[tuple] = field(default_factory=list)         # 8-column GT rows
    pred: list[tuple] = field(default_factory=list)       # 8-column prediction rows
    excluded: list[tuple] = field(default_factory=list)   # (video_id, timestamp)
    empty: list[tuple] = field(default_factory=list)      # 2-column rows (2020 GT only)
    decimal: bool = False                                 # fractional timestamps inside


def _box(rng: np.random.Generator, dyadic: bool) -> list[float]:
    if dyadic:
        x1, x2 = sorted(rng.choice(5, 2, replace=False) / 4)
        y1, y2 = sorted(rng.choice(5, 2, replace=False) / 4)
    else:
        x1, x2 = sorted(np.round(rng.uniform(0, 1, 2), 3))
        y1, y2 = sorted(np.round(rng.uniform(0, 1, 2), 3))
        if x2 - x1 < 0.01 or y2 - y1 < 0.01:
            x1, y1, x2, y2 = 0.1, 0.2, 0.6, 0.9
    return [float(x1), float(y1), float(x2), float(y2)]


def _near(rng: np.random.Generator, box: list[float], dyadic: bool) -> list[float]:
    if dyadic:
        b = np.clip(np.array(box) + rng.choice([-0.25, 0, 0, 0.25], 4), 0, 1)
    elif rng.random() < 0.25:  # IoU exactly 0.5 in exact arithmetic: rounding decides
        x1, y1, x2, y2 = box
        b = np.array([x1, y1, x2, round((y1 + y2) / 2, 4)])
    else:
        b = np.clip(np.round(np.array(box) + rng.normal(0, 0.04, 4), 3), 0, 1)
    x1, x2 = sorted(b[[0, 2]])  # never inverted: mmaction2 refuses those (a unit test's job)
    y1, y2 = sorted(b[[1, 3]])
    return [float(x1), float(y1), float(x2), float(y2)]


def make_case(seed: int) -> Case:
    """Case ``seed``: dyadic boxes when ``seed`` is odd, fractional timestamps (a case for
    the 2020 tool only) when ``seed % 4 == 3``."""
    rng = np.random.default_rng(10_000 + seed)
    dyadic, decimal = seed % 2 == 1, seed % 4 == 3
    scores = iter((rng.permutation(1 << 14) + 0.5) / (1 << 14))  # distinct, float32-exact
    case = Case(decimal=decimal)
    videos = [f"v{i}" for i in range(rng.integers(1, 4))]
    seconds = [t for t in range(899, 899 + int(rng.integers(3, 7)))]
    frames = [(v, float(t)) for v in videos for t in seconds]
    if decimal:
        frames += [(v, t + 0.5) for v, t in frames if rng.random() < 0.5]

    def stamp(t: float) -> str:
        if t != int(t):
            return f"{t:.1f}" if rng.random() < 0.5 else f"{t:.6f}"
        r = rng.random()
        if decimal and r < 0.3:
            return f"{int(t)}.000000"
        return f"{int(t):04d}" if r < 0.65 else str(int(t))

    no_pred_class = LABELS[0] if rng.random() < 0.7 else None
    no_gt_class = LABELS[-1] if rng.random() < 0.7 else None
    people: dict[tuple, list] = {}
    for v, t in frames:
        r = rng.random()
        if r < 0.15:
            continue  # a frame without GT
        if r < 0.25:  # GT only of classes outside the label map
            case.gt.append((v, stamp(t), *_box(rng, dyadic), int(rng.choice(UNKNOWN)), 0))
            continue
        if r < 0.32:  # an empty keyframe, listed in the 2020 GT file only
            case.empty.append((v, stamp(t)))
            continue
        for p in range(int(rng.integers(1, 5 if dyadic else 4))):
            box = _box(rng, dyadic)
            people.setdefault((v, t), []).append(box)
            pid = 0 if dyadic or rng.random() < 0.3 else p
            for a in rng.choice(LABELS + UNKNOWN, int(rng.integers(1, 4)), replace=False):
                if int(a) == no_gt_class:
                    continue
                case.gt.append((v, stamp(t), *box, int(a), pid))
    case.excluded = [(v, stamp(t)) for v, t in frames if rng.random() < 0.12]

    for v, t in frames + [("nogt", 901.0)]:
        rows = []
        crowded = rng.random() < 0.3
        boxes = [_near(rng, b, dyadic) for b in people.get((v, t), []) for _ in
                 range(int(rng.integers(1, 3)))]
        boxes += [_box(rng, dyadic) for _ in range(int(rng.integers(0, 3)) + 12 * crowded)]
        for box in boxes:
            if rng.random() < 0.07:  # zero width or height (mmaction2 rejects inverted ones)
                box = [box[0], box[1], box[0], box[3]] if rng.random() < 0.5 else \
                    [box[0], box[1], box[2], box[1]]
            classes = LABELS + UNKNOWN if crowded or rng.random() < 0.3 else \
                tuple(rng.choice(LABELS + UNKNOWN, int(rng.integers(1, 4)), replace=False))
            for a in classes:
                if int(a) == no_pred_class:
                    continue
                rows.append((v, stamp(t), *box, int(a), float(next(scores))))
        case.pred += [rows[i] for i in rng.permutation(len(rows))]  # not in score order
    if rng.random() < 0.5:
        case.pred = [case.pred[i] for i in rng.permutation(len(case.pred))]
    if rng.random() < 0.6:
        _tie_trap(case, rng, scores, equal_ids=rng.random() < 0.5)
    return case


def _tie_trap(case: Case, rng: np.random.Generator, scores, equal_ids: bool) -> None:
    """A frame where the GT order decides a match.  GT boxes A = x[0, .75] and B =
    x[.25, 1] (file order: B first); prediction P1 = x[.25, .75] has the same IoU (2/3) with
    both, P2 = A (IoU 1 with A) scores lower.  If P1 takes A, P2 is a false positive; if it
    takes B, P2 is a true positive.  Equal person ids: the official heap lists A first, file
    order B; person ids 0 (B) and 1 (A): descending person id lists A first, file order B."""
    a = int(rng.choice(LABELS[1:-1]))
    t = "1500"
    pid_b, pid_a = (0, 0) if equal_ids else (0, 1)
    case.gt += [("tie", t, 0.25, 0.0, 1.0, 1.0, a, pid_b),
                ("tie", t, 0.0, 0.0, 0.75, 1.0, a, pid_a)]
    s1, s2 = sorted((float(next(scores)), float(next(scores))), reverse=True)
    case.pred += [("tie", t, 0.25, 0.0, 0.75, 1.0, a, s1), ("tie", t, 0.0, 0.0, 0.75, 1.0, a, s2)]


def labelmap_text() -> str:
    return "".join(f'item {{\n  name: "{n}"\n  id: {a}\n}}\n' for a, n in zip(LABELS, NAMES,
                                                                              strict=True))


def _csv(rows: list[tuple]) -> str:
    return "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def write_case(case: Case, folder: str | Path) -> dict[str, Path]:
    """``gt.csv`` + ``excluded.csv`` (the 2019 layout), ``gt2020.csv`` (the 2020 layout: the
    GT rows and the 2-column empty-keyframe rows, no excluded file), ``pred.csv``,
    ``labelmap.pbtxt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"gt": _csv(case.gt), "gt2020": _csv(case.gt + case.empty),
             "excluded": _csv(case.excluded), "pred": _csv(case.pred)}
    paths = {}
    for name, text in files.items():
        paths[name] = folder / f"{name}.csv"
        paths[name].write_text(text)
    paths["labelmap"] = folder / "labelmap.pbtxt"
    paths["labelmap"].write_text(labelmap_text())
    return paths


# In the spirit of the 3-row example: a class with GT but no detection, and a
# detection on a frame without GT, outscoring a true positive.
THREE_ROWS = Case(
    gt=[("v", "0902", 0.1, 0.1, 0.5, 0.5, 1, 0), ("v", "0902", 0.1, 0.1, 0.5, 0.5, 3, 0)],
    pred=[("v", "0902", 0.1, 0.1, 0.5, 0.5, 1, 0.9), ("v", "0903", 0.1, 0.1, 0.5, 0.5, 1, 0.95),
          ("v", "0902", 0.6, 0.6, 0.9, 0.9, 3, 0.5)],
)
