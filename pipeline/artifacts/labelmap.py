"""Label maps: AVA ``.pbtxt`` files, plus acar's ``superclass`` extension.

Both AVA flavours are read::

    item { name: "stand" id: 12 }                                 # v2.2 / ActivityNet
    label { name: "stand" label_id: 12 label_type: PERSON_MOVEMENT }  # v2.1 list

acar extension: an optional ``superclass: "pose"`` field inside ``item``.  Classes
whose superclass is ``pose`` are mutually exclusive (one softmax in training and
inference); every other class gets its own sigmoid.  AVA v2.1 ``label_type`` values map
to superclasses: PERSON_MOVEMENT -> pose, OBJECT_MANIPULATION -> object,
PERSON_INTERACTION -> person.

A map without any superclass or label_type gets AVA's id ranges (1-14 pose, 15-63
object, 64-80 person) only if it *is* AVA's: every class carries AVA's name for its id
(compared up to the first " (", case-insensitively; any subset of AVA's 80 classes, e.g.
the 60 evaluated ones), or ``ava_ranges=True`` is passed.  Any other plain map (your own
dataset, ids 1..N) has no pose group: one sigmoid per class.  To make some of its classes
one softmax group, mark them ``superclass: "pose"``::

    item { name: "stand" id: 1 superclass: "pose" }
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import ArtifactError
from .atomic import write_text_atomic

POSE = "pose"
LABEL_TYPES = {"PERSON_MOVEMENT": "pose", "OBJECT_MANIPULATION": "object",
               "PERSON_INTERACTION": "person"}

_BLOCK_RE = re.compile(r"(item|label)\s*\{([^{}]*)\}", re.S)
_FIELD_RE = re.compile(r"(\w+)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s}]+)")
_COMMENT_RE = re.compile(r"#[^\n]*")
_OPEN_RE = re.compile(r"(item|label)\s*\{")


def _check_gap(path: Path, text: str, start: int, stop: int) -> None:
    """Between blocks only blanks and ``#`` comments may stand: anything else is a block
    that lost a brace (which would silently drop a class), or stray text."""
    gap = _COMMENT_RE.sub(lambda m: " " * len(m.group()), text[start:stop])
    stripped = gap.lstrip()
    if not stripped:
        return
    at = start + len(gap) - len(stripped)
    line = text.count("\n", 0, at) + 1
    if m := _OPEN_RE.match(stripped):
        raise ArtifactError(path, f"'{m.group(1)}' block is not closed (a '}}' is missing "
                            "before the next block or the end of the file)", line)
    shown = stripped.splitlines()[0].strip()[:40]
    raise ArtifactError(path, f"unexpected text '{shown}' (expected 'item {{ name: ... id: "
                        "... }' blocks)", line)


@dataclass(frozen=True)
class LabelMap:
    """Ordered classes: ``ids[i]`` has name ``names[i]`` and ``superclasses[i]``."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    superclasses: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.superclasses:
            object.__setattr__(self, "superclasses", ("",) * len(self.ids))

    @property
    def num_classes(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> dict[int, int]:
        """action id -> position (0..num_classes-1)."""
        return {a: i for i, a in enumerate(self.ids)}

    @property
    def pose_indices(self) -> list[int]:
        """Positions of the mutually exclusive pose classes (softmax group)."""
        return [i for i, s in enumerate(self.superclasses) if s == POSE]

    def name(self, action_id: int) -> str:
        return self.names[self.index[action_id]]

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "names": list(self.names),
                "superclasses": list(self.superclasses)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelMap:
        return cls(tuple(d["ids"]), tuple(d["names"]), tuple(d.get("superclasses") or ()))


# AVA v2.1/v2.2 action names (ava_action_list_v2.1.pbtxt): the fingerprint of AVA's map.
AVA_NAMES = {
    1: "bend/bow", 2: "crawl", 3: "crouch/kneel", 4: "dance", 5: "fall down", 6: "get up",
    7: "jump/leap", 8: "lie/sleep", 9: "martial art", 10: "run/jog", 11: "sit", 12: "stand",
    13: "swim", 14: "walk", 15: "answer phone", 16: "brush teeth", 17: "carry/hold",
    18: "catch", 19: "chop", 20: "climb", 21: "clink glass", 22: "close", 23: "cook",
    24: "cut", 25: "dig", 26: "dress/put on clothing", 27: "drink", 28: "drive", 29: "eat",
    30: "enter", 31: "exit", 32: "extract", 33: "fishing", 34: "hit", 35: "kick",
    36: "lift/pick up", 37: "listen", 38: "open", 39: "paint", 40: "play board game",
    41: "play musical instrument", 42: "play with pets", 43: "point to", 44: "press",
    45: "pull", 46: "push", 47: "put down", 48: "read", 49: "ride", 50: "row boat",
    51: "sail boat", 52: "shoot", 53: "shovel", 54: "smoke", 55: "stir", 56: "take a photo",
    57: "text on/look at a cellphone", 58: "throw", 59: "touch", 60: "turn", 61: "watch",
    62: "work on a computer", 63: "write", 64: "fight/hit", 65: "give/serve",
    66: "grab", 67: "hand clap", 68: "hand shake", 69: "hand wave", 70: "hug",
    71: "kick", 72: "kiss", 73: "lift", 74: "listen to", 75: "play with kids",
    76: "push", 77: "sing to", 78: "take", 79: "talk to", 80: "watch",
}


def _short(name: str) -> str:
    return name.split(" (")[0].strip().lower()


def is_ava(ids: tuple[int, ...] | list[int], names: tuple[str, ...] | list[str]) -> bool:
    """Whether every class carries AVA's name for its id (a subset of AVA's map)."""
    return bool(ids) and all(AVA_NAMES.get(a) == _short(n)
                             for a, n in zip(ids, names, strict=True))


def softmax_notice(labelmap: LabelMap) -> str:
    """One line naming the classes of the pose softmax group (or saying there is none)."""
    pose = labelmap.pose_indices
    if len(pose) < 2:
        return (f"{len(labelmap.ids)} classes, one sigmoid each: no pose softmax group "
                '(mark mutually exclusive classes superclass: "pose" in the label map)')
    names = [labelmap.names[i] for i in pose]
    shown = ", ".join(names[:6]) + (f", ... ({len(names)})" if len(names) > 6 else "")
    return (f"pose softmax over {len(pose)} classes ({shown}); a sigmoid for each of the "
            f"other {len(labelmap.ids) - len(pose)}")


def _ava_superclass(action_id: int) -> str:
    if 1 <= action_id <= 14:
        return "pose"
    if 15 <= action_id <= 63:
        return "object"
    if 64 <= action_id <= 80:
        return "person"
    return ""


def read_labelmap(path: str | os.PathLike, ava_ranges: bool | None = None) -> LabelMap:
    """The label map of ``path``.  ``ava_ranges``: give a map without superclasses AVA's
    id ranges (True), never (False), or when its names are AVA's (None, the default)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(path, f"cannot read label map ({err.__class__.__name__})") from None
    ids, names, supers = [], [], []
    end = 0
    for m in _BLOCK_RE.finditer(text):
        _check_gap(path, text, end, m.start())
        end = m.end()
        line = text.count("\n", 0, m.start()) + 1
        fields = {k: v.strip("\"'") for k, v in _FIELD_RE.findall(m.group(2))}
        raw_id = fields.get("id", fields.get("label_id"))
        if raw_id is None or "name" not in fields:
            raise ArtifactError(path, f"{m.group(1)} block needs a name and an id", line)
        try:
            action_id = int(raw_id)
        except ValueError:
            raise ArtifactError(path, f"id must be an integer, got '{raw_id}'", line) from None
        if action_id in ids:
            raise ArtifactError(path, f"duplicate id {action_id}", line)
        sup = fields.get("superclass") or LABEL_TYPES.get(fields.get("label_type", ""), "")
        ids.append(action_id)
        names.append(fields["name"])
        supers.append(sup)
    _check_gap(path, text, end, len(text))
    if not ids:
        raise ArtifactError(path, "no 'item { name: ... id: ... }' entries found")
    if not any(supers) and (is_ava(ids, names) if ava_ranges is None else ava_ranges):
        supers = [_ava_superclass(a) for a in ids]
    return LabelMap(tuple(ids), tuple(names), tuple(supers))


def write_labelmap(labelmap: LabelMap, path: str | os.PathLike) -> None:
    lines = []
    for a, n, s in zip(labelmap.ids, labelmap.names, labelmap.superclasses, strict=True):
        extra = f'\n  superclass: "{s}"' if s else ""
        lines.append(f'item {{\n  name: "{n}"\n  id: {a}{extra}\n}}')
    write_text_atomic(path, "\n".join(lines) + "\n")
