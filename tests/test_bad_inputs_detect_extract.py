"""Bad inputs at the detect and extract boundaries (issue 19): each case drives the CLI as a
user would (``acar ...`` through ``cli.main.main`` in a click CliRunner isolation) and
asserts a non-zero exit, one ``error:`` line naming the file or parameter, and that the
output path holds what it held before (nothing, or the same bytes: no finished work lost).

Catalogue: ``DETECT_CASES`` and ``EXTRACT_CASES``; the BOM repro of item 5 and the
``--allow-empty`` escape hatch are tested beside them.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.main import main
from pipeline import detect, extract
from pipeline.artifacts.detections import SCHEMA, read_detections, write_detections
from pipeline.artifacts.features import FeatureStore


def acar(*args: str | Path) -> tuple[int, str, str]:
    """Run ``acar ARGS`` as the console script does: (exit code, stdout, stderr)."""
    runner = CliRunner()
    argv = sys.argv
    with runner.isolation() as (out, err, _):
        sys.argv = ["acar", *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.argv = argv
        return code, out.getvalue().decode(), err.getvalue().decode()


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every byte under ``path`` (None: nothing there)."""
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
                if p.is_file()}
    return None


def assert_one_line_error(code: int, err: str, names: str) -> str:
    assert code != 0
    errors = [ln for ln in err.splitlines() if ln.lower().startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    assert names in errors[0], (names, errors[0])
    return errors[0]


# ---- inputs -------------------------------------------------------------------------------

ROW = "v1,0902,0.1,0.2,0.5,0.9,1,0\n"


def _csv(tmp: Path, text: str | bytes, name: str = "a.csv") -> Path:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _dets_table(tmp: Path, change: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                name: str = "d.parquet", schema: pa.Schema | None = SCHEMA) -> Path:
    """A detections file for the world's videos, written raw (bypassing the writer's
    checks) after ``change``."""
    df = pd.DataFrame({"video_id": ["train_000", "train_000", "val_000"],
                       "timestamp": [1, 2, 1], "x1": [0.1, 0.2, 0.3], "y1": [0.1, 0.2, 0.3],
                       "x2": [0.5, 0.6, 0.7], "y2": [0.5, 0.6, 0.7],
                       "score": [0.9, 0.8, 0.7]})
    if change is not None:
        df = change(df)
    path = tmp / name
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    pq.write_table(table, path)
    return path


def _set(col: str, value, row: int = 2) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df[col] = df[col].astype(object) if isinstance(value, str) else df[col]
        df.loc[row, col] = value
        return df
    return change


def _column(col: str, values: list) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df[col] = values
        return df
    return change


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, Path], list[str]]   # (tmp, world) -> the stage's arguments
    names: str                                # what the error line must name ({tmp}, {world})
    problem: str                              # a fragment of the problem's wording


# ---- detect ---------------------------------------------------------------------------------

def _gt(text: str | bytes, *extra: str):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--source", "gt", "--annotations", str(_csv(tmp, text)), *extra]
    return make


def _videos_dir(tmp: Path, layout: dict[str, bytes]) -> Path:
    """A videos folder holding ``layout`` (relative path -> bytes)."""
    videos = tmp / "videos"
    videos.mkdir()
    for rel, data in layout.items():
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(data)
    return videos


def _yolo_videos(layout: dict[str, bytes]):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--source", "yolo", "--videos", str(_videos_dir(tmp, layout)),
                "--weights", "no-such.pt"]
    return make


def _gt_with_videos(layout: dict[str, bytes]):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--source", "gt", "--annotations", str(_csv(tmp, ROW)), "--videos",
                str(_videos_dir(tmp, layout))]
    return make


def _proposals(text: str):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--source", "proposals", str(_csv(tmp, text, "p.csv"))]
    return make


def _yolo_timestamps(text: str):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--source", "yolo", "--videos", str(world / "videos"), "--weights",
                "no-such.pt", "--timestamps", str(_csv(tmp, text, "t.csv"))]
    return make


DETECT_CASES = [
    Case("inverted-box", _gt(ROW + "v1,0903,0.6,0.2,0.5,0.9,1,0\n"), "{tmp}/a.csv:2",
         "inverted box"),
    Case("nan-coordinate", _gt(ROW + "v1,0903,nan,0.2,0.5,0.9,1,0\n"), "{tmp}/a.csv:2",
         "normalised"),
    Case("out-of-range", _gt("v1,0902,0.1,0.2,1.5,0.9,1,0\n"), "{tmp}/a.csv:1", "normalised"),
    Case("float-timestamp", _gt("v1,902.5,0.1,0.2,0.5,0.9,1,0\n"), "{tmp}/a.csv:1",
         "'timestamp' must be an integer"),
    Case("string-coordinate", _gt("v1,0902,abc,0.2,0.5,0.9,1,0\n"), "{tmp}/a.csv:1",
         "'x1' must be a number"),
    Case("nine-columns", _gt("v1,0902,0.1,0.2,0.5,0.9,1,0,7\n"), "{tmp}/a.csv:1",
         "columns"),
    Case("binary-annotations", _gt(b"\xff\xfe\x00\x81,\x00\n"), "{tmp}/a.csv",
         "not a text CSV"),
    Case("empty-annotations", _gt(""), "{tmp}/d.parquet", "no detections"),
    Case("blank-annotations", _gt("\n \n"), "{tmp}/d.parquet", "no detections"),
    Case("annotations-not-in-videos", _gt_with_videos({"other.mp4": b""}), "{tmp}/d.parquet",
         "none of the 1 videos of the annotations (v1) is in"),
    Case("gt-empty-videos-folder", _gt_with_videos({}), "{tmp}/videos",
         "no video file"),
    Case("yolo-empty-videos-folder", _yolo_videos({}), "{tmp}/videos", "found nothing"),
    Case("yolo-videos-in-subfolders",
         _yolo_videos({"train/a.mp4": b"", "val/b.mp4": b"", "val/c.mp4": b""}),
         "{tmp}/videos", "its subfolders hold videos: train/ (1), val/ (2)"),
    Case("yolo-only-other-files", _yolo_videos({"notes.txt": b"x", "a.mp4.part": b""}),
         "{tmp}/videos", "found 2 other files: a.mp4.part, notes.txt"),
    Case("yolo-empty-timestamps", _yolo_timestamps(""), "{tmp}/t.csv",
         "no (video_id, timestamp) row"),
    Case("yolo-three-column-timestamps", _yolo_timestamps("v,1,2\n"), "{tmp}/t.csv:1",
         "expected 2 (video_id,timestamp), 7 or 8 columns"),
    Case("proposals-inverted", _proposals("v,0902,0.6,0.2,0.5,0.9,,0.9\n"), "{tmp}/p.csv:1",
         "x1 <= x2"),
    Case("proposals-out-of-range", _proposals("v,0902,0.1,0.2,0.5,1.9,,0.9\n"),
         "{tmp}/p.csv:1", "normalised"),
    Case("proposals-seven-columns", _proposals("v,0902,0.1,0.2,0.5,0.9,0.9\n"),
         "{tmp}/p.csv:1", "expected 8 columns"),
    Case("proposals-below-min-score", _proposals("v,0902,0.1,0.2,0.5,0.9,,0.05\n"),
         "{tmp}/d.parquet", "no detections (no box)"),
]


def _names(case: Case, tmp: Path, world: Path) -> str:
    return case.names.format(tmp=tmp, world=world)


@pytest.mark.parametrize("previous", [False, True], ids=["no-output", "previous-output"])
@pytest.mark.parametrize("case", DETECT_CASES, ids=[c.id for c in DETECT_CASES])
def test_detect_bad_input(case, previous, tmp_path, synth_world):
    out = tmp_path / "d.parquet"
    if previous:     # a finished earlier run's file must survive the failed one
        write_detections(pd.DataFrame({"video_id": ["old"], "timestamp": [1], "x1": [0.1],
                                       "y1": [0.1], "x2": [0.2], "y2": [0.2],
                                       "score": [0.5]}), out, {"source": "earlier"})
    before = snapshot(out)
    code, _, err = acar("detect", *case.make(tmp_path, synth_world), "--out", out)
    line = assert_one_line_error(code, err, _names(case, tmp_path, synth_world))
    assert case.problem in line, line
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.parquet")]


def test_detect_allow_empty_writes_an_empty_table(tmp_path):
    out = tmp_path / "d.parquet"
    videos = tmp_path / "videos"
    videos.mkdir()
    code, _, err = acar("detect", "--source", "gt", "--annotations", _csv(tmp_path, ""),
                        "--videos", videos, "--out", out, "--allow-empty")
    assert code == 0, err
    assert len(read_detections(out)[0]) == 0


def test_detect_gt_with_a_utf8_bom_keeps_the_first_video_id(tmp_path, synth_world):
    """issue 19 item 5's repro: a BOM + a 7-column file made a phantom '\\ufeffval_000'."""
    lines = (synth_world / "val.csv").read_text().splitlines()
    seven = "\n".join(",".join(ln.split(",")[:7]) for ln in lines) + "\n"
    bom = _csv(tmp_path, b"\xef\xbb\xbf" + seven.encode(), "b.csv")
    out = tmp_path / "d.parquet"
    code, _, err = acar("detect", "--source", "gt", "--annotations", bom, "--out", out)
    assert code == 0, err
    got = read_detections(out)[0]
    plain = detect.from_annotations([synth_world / "val.csv"])
    assert sorted(set(got["video_id"])) == sorted(set(plain["video_id"])) == ["val_000"]
    assert len(got) == len(plain)


# ---- extract --------------------------------------------------------------------------------

EXTRACT_FLAGS = ["--backbone", "mc3_18", "--random-init", "--clip-frames", "4",
                 "--clip-stride", "2", "--clip-fps", "8", "--short-side", "16",
                 "--batch-size", "2", "--num-workers", "0"]
CFG = extract.ExtractConfig(backbone="mc3_18", random_init=True, clip_frames=4, clip_stride=2,
                            clip_fps=8, short_side=16, batch_size=2, num_workers=0)


def _with_dets(change=None, schema: pa.Schema | None = SCHEMA, *extra: str):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--videos", str(world / "videos"), "--detections",
                str(_dets_table(tmp, change, schema=schema)), *EXTRACT_FLAGS, *extra]
    return make


def _dets_file(data: bytes):
    def make(tmp: Path, world: Path) -> list[str]:
        path = tmp / "d.parquet"
        path.write_bytes(data)
        return ["--videos", str(world / "videos"), "--detections", str(path), *EXTRACT_FLAGS]
    return make


def _bad_meta(tmp: Path, world: Path) -> list[str]:
    path = _dets_table(tmp)
    table = pq.read_table(path).replace_schema_metadata({b"acar": b"{not json"})
    pq.write_table(table, path)
    return ["--videos", str(world / "videos"), "--detections", str(path), *EXTRACT_FLAGS]


def _missing_column(tmp: Path, world: Path) -> list[str]:
    path = _dets_table(tmp, lambda df: df.drop(columns=["score"]), schema=None)
    return ["--videos", str(world / "videos"), "--detections", str(path), *EXTRACT_FLAGS]


def _videos_layout(layout: dict[str, str]):
    """A videos folder of links to the world's videos at ``rel`` paths."""
    def make(tmp: Path, world: Path) -> list[str]:
        videos = tmp / "videos"
        videos.mkdir()
        for rel, name in layout.items():
            (videos / rel).parent.mkdir(parents=True, exist_ok=True)
            (videos / rel).symlink_to(world / "videos" / name)
        return ["--videos", str(videos), "--detections", str(_dets_table(tmp)),
                *EXTRACT_FLAGS]
    return make


def _flags(*extra: str):
    def make(tmp: Path, world: Path) -> list[str]:
        return ["--videos", str(world / "videos"), "--detections", str(_dets_table(tmp)),
                *EXTRACT_FLAGS, *extra]
    return make


EXTRACT_CASES = [
    Case("nan-coordinate", _with_dets(_set("x1", np.nan)), "{tmp}/d.parquet",
         "row 2 (val_000, t=1): non-finite box"),
    Case("out-of-range", _with_dets(_set("y2", 1.5)), "{tmp}/d.parquet", "not normalised"),
    Case("inverted-box", _with_dets(_set("x1", 0.9)), "{tmp}/d.parquet",
         "inverted box: x1 0.9 > x2 0.7"),
    Case("nan-score", _with_dets(_set("score", np.nan)), "{tmp}/d.parquet",
         "non-finite score"),
    Case("empty-video-id", _with_dets(_set("video_id", "")), "{tmp}/d.parquet",
         "empty video_id"),
    Case("float-timestamp", _with_dets(_column("timestamp", [1.5, 2.0, 1.0]), None),
         "{tmp}/d.parquet", "column 'timestamp' is double, expected integer seconds"),
    Case("string-coordinates", _with_dets(_column("x1", ["0.1", "0.2", "0.3"]), None),
         "{tmp}/d.parquet", "column 'x1' is"),
    Case("huge-timestamp", _with_dets(_column("timestamp", [1, 2, 2**40]), None),
         "{tmp}/d.parquet", "do not fit the detections schema"),
    Case("missing-column", _missing_column, "{tmp}/d.parquet", "missing detection columns"),
    Case("metadata-not-json", _bad_meta, "{tmp}/d.parquet", "metadata is not JSON"),
    Case("not-parquet", _dets_file(b"video_id,timestamp\n"), "{tmp}/d.parquet",
         "not a readable Parquet file"),
    Case("empty-detections", _with_dets(lambda df: df.iloc[:0]), "{tmp}/d.parquet",
         "no detections"),
    Case("empty-videos-folder", _videos_layout({}), "{tmp}/videos", "found nothing"),
    Case("videos-in-subfolders", _videos_layout({"train/train_000.mp4": "train_000.mp4",
                                                 "val/val_000.mp4": "val_000.mp4"}),
         "{tmp}/videos", "its subfolders hold videos: train/ (1), val/ (1)"),
    Case("pad-multiple-not-a-stride-multiple", _flags("--pad-multiple", "12"),
         "pad_multiple 12", "or a multiple of mc3_18's output stride"),
    Case("short-side-too-small", _flags("--short-side", "4"),
         "--short-side: extract.short_side must be >= 8", ""),
    Case("bad-shard", _flags("--shard", "2/2"), "--shard", "need 0 <= i < N"),
    Case("values-without-check", _flags("--values"), "--values", "goes with --check"),
]


@pytest.fixture(scope="module")
def finished_store(synth_world, tmp_path_factory) -> Path:
    """A finished store of the world's detections (an earlier, successful run)."""
    tmp = tmp_path_factory.mktemp("finished")
    url = tmp / "f.zarr"
    assert extract.run(CFG, synth_world / "videos", _dets_table(tmp), str(url)) == []
    assert FeatureStore(str(url)).videos() == ["train_000", "val_000"]
    return url


@pytest.mark.parametrize("previous", [False, True], ids=["no-output", "previous-output"])
@pytest.mark.parametrize("case", EXTRACT_CASES, ids=[c.id for c in EXTRACT_CASES])
def test_extract_bad_input(case, previous, tmp_path, synth_world, finished_store):
    out = tmp_path / "f.zarr"
    if previous:
        shutil.copytree(finished_store, out)
    before = snapshot(out)
    code, _, err = acar("extract", *case.make(tmp_path, synth_world), "--out", out)
    line = assert_one_line_error(code, err, _names(case, tmp_path, synth_world))
    assert case.problem in line, line
    assert snapshot(out) == before


@pytest.mark.parametrize("occupant", ["file", "file-parent", "bank"])
def test_extract_out_that_is_not_a_feature_store(occupant, tmp_path, synth_world):
    """--out on a file, under a file, or on another kind of acar store: one line, and the
    thing that was there is untouched."""
    out = tmp_path / "f.zarr"
    if occupant == "file":
        out.write_text("not a store")
    elif occupant == "file-parent":
        (tmp_path / "x").write_text("a file")
        out = tmp_path / "x" / "f.zarr"
    else:
        FeatureStore(str(out), mode="a", kind="bank")
    before = snapshot(out) if occupant != "file-parent" else snapshot(tmp_path / "x")
    code, _, err = acar("extract", "--videos", synth_world / "videos", "--detections",
                        _dets_table(tmp_path), *EXTRACT_FLAGS, "--out", out)
    assert_one_line_error(code, err, str(out))
    after = snapshot(out) if occupant != "file-parent" else snapshot(tmp_path / "x")
    assert after == before


def test_extract_allow_empty(tmp_path, synth_world):
    out = tmp_path / "f.zarr"
    code, _, err = acar("extract", "--videos", synth_world / "videos", "--detections",
                        _dets_table(tmp_path, lambda df: df.iloc[:0]), *EXTRACT_FLAGS,
                        "--out", out, "--allow-empty")
    assert code == 0, err
    assert FeatureStore(str(out)).videos() == []
    code, out_text, _ = acar("extract", "--check", "--out", out)
    assert code == 1 and "no video to check" in out_text
    assert acar("extract", "--check", "--out", out, "--allow-empty")[0] == 0


def test_catalogue_sizes():
    """The closing note of issue 19 reports these."""
    assert len(DETECT_CASES) >= 20 and len(EXTRACT_CASES) >= 18
