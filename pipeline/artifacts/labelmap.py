"""Label maps: AVA ``.pbtxt`` files, plus acar's ``superclass`` extension.

Both AVA flavours are read::

    item { name: "stand" id: 12 }                                 # v2.2 / ActivityNet
    label { name: "stand" label_id: 12 label_type: PERSON_MOVEMENT }  # v2.1 list

acar extension: an optional ``superclass: "pose"`` field inside ``item``.  Classes
whose superclass is ``pose`` are mutually exclusive (one softmax in training).
AVA ``label_type`` values map to superclasses: PERSON_MOVEMENT -> pose,
OBJECT_MANIPULATION -> object, PERSON_INTERACTION -> person.  For plain AVA
``item`` files without superclasses, ids are mapped with AVA's own ranges
(1-14 pose, 15-63 object, 64-80 person) when ``ava_defaults`` is true.
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


def _ava_superclass(action_id: int) -> str:
    if 1 <= action_id <= 14:
        return "pose"
    if 15 <= action_id <= 63:
        return "object"
    if 64 <= action_id <= 80:
        return "person"
    return ""


def read_labelmap(path: str | os.PathLike, ava_defaults: bool = True) -> LabelMap:
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
    if ava_defaults and not any(supers):
        supers = [_ava_superclass(a) for a in ids]
    return LabelMap(tuple(ids), tuple(names), tuple(supers))


def write_labelmap(labelmap: LabelMap, path: str | os.PathLike) -> None:
    lines = []
    for a, n, s in zip(labelmap.ids, labelmap.names, labelmap.superclasses, strict=True):
        extra = f'\n  superclass: "{s}"' if s else ""
        lines.append(f'item {{\n  name: "{n}"\n  id: {a}{extra}\n}}')
    write_text_atomic(path, "\n".join(lines) + "\n")
