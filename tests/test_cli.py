import subprocess
import sys

from click.testing import CliRunner

from cli.main import cli


def run_acar(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_stages():
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in ("detect", "extract", "bank", "train", "eval", "synth", "viz", "demo", "report"):
        assert f"  {name} " in out
    for name in ("detect", "extract", "bank", "train", "eval", "viz", "demo", "report"):
        res = CliRunner().invoke(cli, [name, "--help"])
        assert res.exit_code == 0 and "--out" in res.output


def test_bad_csv_is_one_line_error_with_file_and_line(tmp_path, labelmap_file):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,0001,0.1,0.1,0.5,0.5,1,0\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("v,0001,0.1,0.1,0.5,0.5,1,0.9\nv,0001,0.1,oops,0.5,0.5,1,0.9\n")
    res = run_acar("eval", "--predictions", pred, "--annotations", gt, "--labelmap",
                   labelmap_file, "--out", tmp_path / "m.json")
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {pred}:2: column 'y1' must be a number, got 'oops'"]
    assert not (tmp_path / "m.json").exists()


def test_missing_store_and_bad_params_are_clear(tmp_path, labelmap_file, detections_file):
    gt = tmp_path / "gt.csv"
    gt.write_text("v,0001,0.1,0.1,0.5,0.5,1,0\n")
    res = run_acar("train", "--features", tmp_path / "nope.zarr", "--detections",
                   detections_file, "--annotations", gt, "--labelmap", labelmap_file,
                   "--out", tmp_path / "m.pt")
    assert res.returncode == 1 and "nope.zarr: no Zarr store here" in res.stderr
    assert "Traceback" not in res.stderr
    params = tmp_path / "stages.yaml"
    params.write_text("train:\n  epochz: 3\n")
    res = run_acar("--params", params, "train", "--features", tmp_path / "nope.zarr",
                   "--detections", detections_file, "--annotations", gt, "--labelmap",
                   labelmap_file, "--out", tmp_path / "m.pt")
    assert res.returncode == 1 and "unknown TrainConfig parameter(s) ['epochz']" in res.stderr
