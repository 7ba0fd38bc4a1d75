"""The world's class frequencies: the share of boxes (person-keyframes) per class.

Reads a synth world's annotation CSVs (as the synth stage wrote them, label noise
included) and prints a table of each class's share of the boxes of a split, rarest
first, marking the classes under 2% (issue 17: long-tailed as AVA's, at least three of
them).  Writes bench/results/class_freq<tag>.json.

    uv run python bench/class_freq.py --world data/synth
    uv run python bench/class_freq.py --world /tmp/h17world/seed0/synth --tag _h17world
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.artifacts.annotations import read_annotations
from pipeline.artifacts.labelmap import read_labelmap

RARE = 0.02


def shares(world: Path, split: str) -> tuple[int, list[dict]]:
    """(boxes, rows): one row per class of the label map, rarest first."""
    lm = read_labelmap(world / "labelmap.pbtxt")
    df = read_annotations(world / f"{split}.csv")
    boxes = len(df.drop_duplicates(["video_id", "timestamp", "person_id"]))
    counts = df["action_id"].value_counts()
    rows = [{"id": a, "name": lm.name(a), "family": lm.superclasses[lm.index[a]],
             "boxes": int(counts.get(a, 0)), "share": int(counts.get(a, 0)) / boxes}
            for a in lm.ids]
    return boxes, sorted(rows, key=lambda r: r["share"])


def table(boxes: int, rows: list[dict]) -> str:
    lines = [f"| class | family | boxes (of {boxes}) | share |", "|---|---|---|---|"]
    for r in rows:
        mark = " (< 2%)" if r["share"] < RARE else ""
        lines.append(f"| {r['name']} | {r['family']} | {r['boxes']} | "
                     f"{100 * r['share']:.2f}%{mark} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="data/synth")
    ap.add_argument("--splits", nargs="+", default=["train", "val"])
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    out = {}
    for split in args.splits:
        boxes, rows = shares(Path(args.world), split)
        out[split] = {"boxes": boxes, "classes": rows,
                      "rare": [r["name"] for r in rows if r["share"] < RARE]}
        print(f"{split}:\n{table(boxes, rows)}\n")
    path = Path(__file__).parent / "results" / f"class_freq{args.tag}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"world": str(args.world), **out}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
