"""--shard i/N with N = 8 over one store, as a SLURM array runs it (issue 21 item 7): eight
concurrent `acar extract` processes with a small backbone fill one store, equal to the store
of one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import detect, extract, synth
from pipeline.artifacts.features import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
N = 8
CFG = extract.ExtractConfig(backbone="mc3_18", random_init=True, clip_frames=4, clip_stride=2,
                            clip_fps=8, short_side=16, batch_size=2, num_workers=0)


@pytest.fixture(scope="module")
def world8(tmp_path_factory) -> tuple[Path, Path]:
    """Eight tiny videos (one per shard) and their ground-truth detections."""
    out = tmp_path_factory.mktemp("world8")
    synth.run(synth.SynthConfig(num_train=6, num_val=2, duration=3, fps=8, width=64,
                                height=48), out)
    dets = out / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), out / "videos", dets,
               [out / "train.csv", out / "val.csv"])
    return out, dets


def _extract_shard(params: Path, world: Path, dets: Path, url: str, i: int
                   ) -> subprocess.Popen:
    # SLURM gives each array task its CPUs; here 8 tasks share the machine: one thread each,
    # also the float sums of this test process (conftest sets one torch thread)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--params", str(params), "extract",
         "--videos", str(world / "videos"), "--detections", str(dets), "--out", url,
         "--shard", f"{i}/{N}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=env)


def test_eight_concurrent_shards_give_the_store_of_one_process(world8, tmp_path):
    world, dets = world8
    videos = sorted(p.stem for p in (world / "videos").iterdir())
    assert len(videos) == N                               # every shard has one video
    ref = str(tmp_path / "one.zarr")
    assert extract.run(CFG, world / "videos", dets, ref) == []

    params = tmp_path / "stages.yaml"
    params.write_text(yaml.safe_dump({"extract": {k: v for k, v in CFG.__dict__.items()
                                                  if v is not None}}))
    url = str(tmp_path / "sharded.zarr")                  # none exists yet: all create it
    procs = [_extract_shard(params, world, dets, url, i) for i in range(N)]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode:
            errors.append(err.strip().splitlines()[-1:])
        try:
            os.killpg(proc.pid, signal.SIGKILL)           # orphaned workers, if any
        except ProcessLookupError:
            pass
    assert not errors, errors

    one, many = FeatureStore(ref), FeatureStore(url)
    assert many.videos() == one.videos() == videos
    for v in videos:
        assert many.attrs(v) == one.attrs(v)
        np.testing.assert_array_equal(many.timestamps(v), one.timestamps(v))
        for name in one.spec(v).views:
            assert many.view(v, name) == one.view(v, name)
            np.testing.assert_array_equal(many.read(v, name), one.read(v, name))
    check = subprocess.run([sys.executable, "-m", "cli.main", "extract", "--check", "--out",
                            url, "--detections", str(dets)], cwd=ROOT, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # the shard that ended last (finding the others done) wrote the store's digest: the
    # same bytes as the one process's, so the two stores hold the same bytes
    assert (tmp_path / "sharded.digest").read_bytes() == (tmp_path / "one.digest").read_bytes()
