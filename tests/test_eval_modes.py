"""``acar eval --mode``: each mode equals its tool on seeded trap cases (stored reference
values), the golden fixture in every mode, fractional timestamps, --compare-modes."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from pipeline.artifacts import ArtifactError
from pipeline.ava_eval import MODES, SWITCH_DOC, compare_modes, score_files

try:  # tests/ is not a package: pytest puts it on sys.path
    import eval_mode_cases as cases
except ImportError:  # pragma: no cover - if tests/ becomes a package
    from tests import eval_mode_cases as cases

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "eval_modes" / "reference.json").read_text())
GOLDEN = DATA / "eval_detection"


def fingerprint(paths: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for name in ("gt", "gt2020", "excluded", "pred"):
        digest.update(paths[name].read_bytes())
    return digest.hexdigest()


def case_named(name: str) -> cases.Case:
    return cases.THREE_ROWS if name == "three_rows" else cases.make_case(int(name[4:]))


def score_as_tool(paths: dict[str, Path], mode: str) -> dict:
    """The files the tool was given: the 2020 layout for official-2020."""
    if mode == "official-2020":
        return score_files(paths["pred"], paths["gt2020"], paths["labelmap"], None, mode).metrics
    return score_files(paths["pred"], paths["gt"], paths["labelmap"], paths["excluded"],
                       mode).metrics


@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_each_mode_equals_its_tool(name, tmp_path):
    ref = REFERENCE["cases"][name]
    paths = cases.write_case(case_named(name), tmp_path)
    assert fingerprint(paths) == ref["sha256"], "the case generator changed: rerun the tools"
    for mode, want in ref["tools"].items():
        got = score_as_tool(paths, mode)
        assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-9, rel=0), mode
        for a, ap in want["ap"].items():
            have = got["per_class"][a]["ap"]
            assert (have is None) == (ap is None or math.isnan(ap)), (mode, a)
            if have is not None:
                assert have == pytest.approx(ap, abs=1e-9, rel=0), (mode, a)


def test_every_switch_moves_some_stored_case():
    """The trap cases exercise every switch: for each one, stored cases where setting it
    alone (on the official mode that reads the case) changes the result (recorded when the
    references were made; the agreement test above keeps those cases honest)."""
    moves = REFERENCE["switch_moves"]
    assert set(moves) == set(SWITCH_DOC) and all(n > 0 for n in moves.values()), moves


def test_modes_disagree_where_the_tools_do():
    tools = REFERENCE["cases"]["three_rows"]["tools"]
    assert {m: round(v["mAP"], 6) for m, v in tools.items()} == {
        "official-2019": 0.25, "official-2020": 0.5, "mmaction2": 0.5, "slowfast": 0.25}


@pytest.mark.parametrize("mode", list(MODES))
def test_golden_fixture_in_every_mode(mode):
    """Every tool gives mmaction2's fixture 0.0938552 (checked by running each)."""
    m = score_files(GOLDEN / "pred.csv", GOLDEN / "gt.csv", GOLDEN / "action_list.txt",
                    mode=mode).metrics
    assert m["mAP"] == pytest.approx(0.0938552, abs=1e-6)


@pytest.fixture()
def fractional(tmp_path):
    (tmp_path / "lm.pbtxt").write_text(cases.labelmap_text())
    (tmp_path / "gt.csv").write_text("v,902,0.1,0.1,0.5,0.5,1,0\n"
                                     "v,902.5,0.1,0.1,0.5,0.5,1,0\n"
                                     "v,903\n")
    (tmp_path / "pred.csv").write_text("v,902.000000,0.1,0.1,0.5,0.5,1,0.9\n"
                                       "v,902.5,0.1,0.1,0.5,0.5,1,0.8\n"
                                       "v,903,0.1,0.1,0.5,0.5,1,0.95\n"
                                       "v,904,0.1,0.1,0.5,0.5,1,0.99\n")
    return tmp_path


def test_fractional_timestamps_in_official_2020(fractional):
    """902.5 is a frame of its own, 902.000000 is 902, 903 is an empty keyframe (its
    detection a false positive), 904 is absent from the GT (its detection ignored)."""
    m = score_files(fractional / "pred.csv", fractional / "gt.csv", fractional / "lm.pbtxt",
                    mode="official-2020").metrics
    # ranked: 0.95 FP, 0.9 TP, 0.8 TP -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1
    assert m["per_class"]["1"]["ap"] == pytest.approx(2 / 3, abs=1e-12)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "official-2020"])
def test_fractional_timestamps_elsewhere_are_a_one_line_error(fractional, mode):
    (fractional / "gt.csv").write_text("v,902,0.1,0.1,0.5,0.5,1,0\n")
    with pytest.raises(ArtifactError) as err:
        score_files(fractional / "pred.csv", fractional / "gt.csv", fractional / "lm.pbtxt",
                    mode=mode)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{fractional / 'pred.csv'}:1:")
    assert "fractional timestamps are read with --mode official-2020" in msg
    res = CliRunner().invoke(cli, ["eval", "--mode", mode, "--predictions",
                                   str(fractional / "pred.csv"), "--annotations",
                                   str(fractional / "gt.csv"), "--labelmap",
                                   str(fractional / "lm.pbtxt"), "--out",
                                   str(fractional / "m.json")])
    assert res.exit_code != 0 and not (fractional / "m.json").exists()


def test_official_2020_takes_no_excluded_file(fractional):
    (fractional / "ex.csv").write_text("v,902\n")
    with pytest.raises(ArtifactError, match="takes no excluded-timestamps file"):
        score_files(fractional / "pred.csv", fractional / "gt.csv", fractional / "lm.pbtxt",
                    fractional / "ex.csv", mode="official-2020")


def test_mmaction2_refuses_an_inverted_box(tmp_path):
    (tmp_path / "lm.pbtxt").write_text(cases.labelmap_text())
    (tmp_path / "gt.csv").write_text("v,902,0.1,0.1,0.5,0.5,1,0\n")
    (tmp_path / "pred.csv").write_text("v,902,0.5,0.1,0.1,0.5,1,0.9\n")
    args = (tmp_path / "pred.csv", tmp_path / "gt.csv", tmp_path / "lm.pbtxt")
    assert score_files(*args).metrics["mAP"] == 0.0  # official: dropped
    with pytest.raises(ArtifactError, match=r"pred\.csv: prediction row 0 has x1 > x2"):
        score_files(*args, mode="mmaction2")


def test_action_thr_drops_scores_at_or_below_it(tmp_path):
    (tmp_path / "lm.pbtxt").write_text(cases.labelmap_text())
    (tmp_path / "gt.csv").write_text("v,902,0.1,0.1,0.5,0.5,1,0\n")
    (tmp_path / "pred.csv").write_text("v,902,0.6,0.6,0.9,0.9,1,0.9\n"
                                       "v,902,0.1,0.1,0.5,0.5,1,0.5\n")
    args = (tmp_path / "pred.csv", tmp_path / "gt.csv", tmp_path / "lm.pbtxt")
    assert score_files(*args).metrics["mAP"] == 0.5
    assert score_files(*args, action_thr=0.5).metrics["mAP"] == 0.0
    assert score_files(*args, mode="mmaction2", action_thr=0.8).metrics["mAP"] == 0.0
    # no prediction left: mmaction2 scores no class at all
    assert math.isnan(score_files(*args, mode="mmaction2", action_thr=0.95).metrics["mAP"])


def test_compare_modes_names_the_switch(tmp_path):
    paths = cases.write_case(cases.THREE_ROWS, tmp_path)
    cmp = compare_modes(paths["pred"], paths["gt"], paths["labelmap"], paths["excluded"])
    assert cmp.maps == pytest.approx({"official-2019": 0.25, "official-2020": 0.5,
                                      "mmaction2": 0.5, "slowfast": 0.25})
    assert cmp.most()[:2] == ("unlabelled", "ignore-absent")
    res = CliRunner().invoke(cli, ["eval", "--compare-modes", "--predictions",
                                   str(paths["pred"]), "--annotations", str(paths["gt"]),
                                   "--labelmap", str(paths["labelmap"])])
    assert res.exit_code == 0, res.output
    assert all(m in res.output for m in MODES)
    assert "moves it most: unlabelled=ignore-absent (+0.250000)" in res.output


def test_help_shows_the_switch_table():
    res = CliRunner().invoke(cli, ["eval", "--help"])
    assert res.exit_code == 0
    table = res.output[res.output.index("Modes:"):]
    assert all(m in table for m in MODES) and all(s in table for s in SWITCH_DOC)


def test_unknown_mode_is_a_usage_error():
    res = CliRunner().invoke(cli, ["eval", "--mode", "voc", "--predictions", str(GOLDEN /
                                   "pred.csv"), "--annotations", str(GOLDEN / "gt.csv"),
                                   "--labelmap", str(GOLDEN / "action_list.txt"),
                                   "--out", "unused.json"])
    assert res.exit_code == 2 and "unknown eval mode 'voc'" in res.output
