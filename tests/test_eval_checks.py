"""The result-file checks of ``acar eval`` on numpy columns: the per-column value checks
and the duplicate-row check, both its run-structured fast path and its row-by-row
fallback, against a brute-force answer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.artifacts import ArtifactError
from pipeline.artifacts.csvio import Codes
from pipeline.artifacts.predictions import check_values
from pipeline.evaluate import duplicate_row


def _table(rows: list[tuple]) -> dict:
    """Dict columns as the scoring reader returns them; rows are
    (video, timestamp, x1, y1, x2, y2, action_id, score)."""
    cols = list(zip(*rows, strict=True))
    names = list(dict.fromkeys(cols[0]))
    return {"video_id": Codes(np.array([names.index(v) for v in cols[0]], dtype=np.int32),
                              np.array(names, dtype=object)),
            "timestamp": np.array(cols[1], dtype=np.int64),
            **{c: np.array(v, dtype=np.float64)
               for c, v in zip(("x1", "y1", "x2", "y2"), cols[2:6], strict=True)},
            "action_id": np.array(cols[6], dtype=np.int64),
            "score": np.array(cols[7], dtype=np.float64)}


def _submission(n_frames: int = 3, boxes: int = 2, actions: tuple = (1, 3, 4)) -> list[tuple]:
    """A result file as tools write one: per keyframe, per box, every action ascending."""
    return [("vid", 902 + f, 0.1 * b, 0.2, 0.1 * b + 0.3, 0.9, a, 0.5)
            for f in range(n_frames) for b in range(boxes) for a in actions]


def _brute(rows: list[tuple]) -> int | None:
    seen = set()
    for i, r in enumerate(rows):
        if r[:7] in seen:
            return i
        seen.add(r[:7])
    return None


def test_a_submission_has_no_duplicate() -> None:
    assert duplicate_row(_table(_submission())) is None


@pytest.mark.parametrize("edit", [
    "repeat-run-same-frame", "repeat-run-later", "repeat-action-in-run", "repeat-last-row",
    "unsorted-actions", "unsorted-actions-repeat", "same-box-other-frame",
])
def test_duplicates_found_at_their_first_repeat(edit: str) -> None:
    rows = _submission()
    if edit == "repeat-run-same-frame":    # box 0 of frame 0 listed again after box 1
        rows = rows[:6] + rows[:3] + rows[6:]
    elif edit == "repeat-run-later":       # frame 0's box 1 again at the very end
        rows = rows + rows[3:6]
    elif edit == "repeat-action-in-run":   # actions 1, 3, 3, 4 in one run
        rows = rows[:2] + [rows[1]] + rows[2:]
    elif edit == "repeat-last-row":
        rows = rows + rows[-1:]
    elif edit == "unsorted-actions":       # actions 4, 1, 3 (no repeat): the fallback
        rows = [r[:6] + ((4, 1, 3)[i % 3],) + r[7:] for i, r in enumerate(rows)]
    elif edit == "unsorted-actions-repeat":
        rows = [r[:6] + ((4, 1, 3)[i % 3],) + r[7:] for i, r in enumerate(rows)]
        rows = rows + [rows[4]]
    elif edit == "same-box-other-frame":   # the same box on two keyframes is no repeat
        rows = [r[:2] + (0.1, 0.2, 0.4, 0.9) + r[6:] for r in rows if r[2] == 0.0]
    assert duplicate_row(_table(rows)) == _brute(rows)
    if edit not in ("unsorted-actions", "same-box-other-frame"):
        assert _brute(rows) is not None


def test_random_files_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        rows = [(str(rng.choice(["a", "b"])), int(rng.integers(902, 904)),
                 float(rng.choice([0.1, 0.2])), 0.2, 0.5, 0.9, int(rng.integers(1, 4)), 0.5)
                for _ in range(n)]
        assert duplicate_row(_table(rows)) == _brute(rows), rows


@pytest.mark.parametrize(("row", "col", "value", "message"), [
    (4, 7, float("nan"), "score must be in [0, 1]"),
    (2, 7, 1.5, "score must be in [0, 1]"),
    (5, 2, -0.1, "box coordinates must be finite"),
    (0, 5, float("inf"), "box coordinates must be finite"),
    (3, 4, float("nan"), "box coordinates must be finite"),
    (1, 3, 640.0, "box coordinates must be finite"),
])
def test_check_values_names_the_first_bad_row(tmp_path, row: int, col: int, value: float,
                                              message: str) -> None:
    rows = _submission(n_frames=2)
    rows[row] = rows[row][:col] + (value,) + rows[row][col + 1:]
    rows[row + 1] = rows[row + 1][:col] + (value,) + rows[row + 1][col + 1:]  # not reported
    path = tmp_path / "p.csv"
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    with pytest.raises(ArtifactError, match=re.escape(message)) as err:
        check_values(_table(rows), path)
    assert err.value.line == row + 1


def test_check_values_accepts_edges() -> None:
    rows = [("v", 902, 0.0, -1e-7, 1.0, 1 + 1e-7, 1, 0.0), ("v", 902, 0.0, 0.0, 1.0, 1.0, 3, 1.0)]
    check_values(_table(rows), "p.csv")
