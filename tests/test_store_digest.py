"""The digest beside a finished store (pipeline/artifacts/digest.py): what the DAG's stages
depend on instead of the store folder.  Its bytes follow the store's bytes exactly; extract
and bank write it only for a complete store, and remove it before they write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline import bank, detect, extract
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.digest import (
    digest_path,
    matches,
    read_digest,
    remove_digest,
    store_digest,
    write_digest,
)
from tests.conftest import make_feature_store
from tests.test_bank import det_rows
from tests.test_extract import CFG, _cfg


def _tree(root: Path) -> Path:
    (root / "a" / "c").mkdir(parents=True)
    (root / "zarr.json").write_text('{"node_type": "group"}')
    (root / "a" / "zarr.json").write_text('{"node_type": "array"}')
    (root / "a" / "c" / "0").write_bytes(bytes(range(256)) * 3)
    return root


def test_digest_path_is_beside_the_store():
    assert digest_path("data/features.zarr") == Path("data/features.digest")
    assert digest_path("data/banks/lfb.zarr") == Path("data/banks/lfb.digest")
    assert digest_path("file:///x/f.zarr") == Path("/x/f.digest")
    assert digest_path("out/store") == Path("out/store.digest")
    with pytest.raises(ArtifactError, match="local store"):
        digest_path("s3://bucket/f.zarr")
    assert write_digest("memory://f.zarr") is None        # a remote store gets none


def test_same_bytes_same_digest_file_and_any_change_another(tmp_path):
    a, b = _tree(tmp_path / "a.zarr"), _tree(tmp_path / "b.zarr")
    assert write_digest(a) == tmp_path / "a.digest"
    write_digest(b)
    assert (tmp_path / "a.digest").read_bytes() == (tmp_path / "b.digest").read_bytes()
    record = read_digest(tmp_path / "a.digest")
    assert (record["files"], record["bytes"]) == (3, 768 + 22 + 22)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.digest", "a.zarr", "b.digest",
                                                          "b.zarr"]     # no temp file left
    assert matches(a) and matches(b)
    base = store_digest(a)["digest"]
    chunk = b / "a" / "c" / "0"
    changes = [
        lambda: chunk.write_bytes(b"\x01" + chunk.read_bytes()[1:]),    # one byte
        lambda: chunk.rename(b / "a" / "c" / "1"),                      # a renamed file
        lambda: (b / "a" / "c" / "extra").write_bytes(b""),             # an empty file added
    ]
    for change in changes:
        shutil.rmtree(b)
        _tree(b)
        assert store_digest(b)["digest"] == base
        change()
        assert store_digest(b)["digest"] != base
        assert not matches(b)


def test_bad_digest_files_are_one_line(tmp_path):
    with pytest.raises(ArtifactError, match="no digest file"):
        read_digest(tmp_path / "x.digest")
    (tmp_path / "y.digest").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(ArtifactError, match="not a store-digest"):
        read_digest(tmp_path / "y.digest")
    with pytest.raises(ArtifactError, match="no store folder"):
        store_digest(tmp_path / "missing.zarr")
    remove_digest(tmp_path / "missing.zarr")              # nothing to remove: no error


# ---- extract ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world_and_dets(synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", out,
               [synth_world / "train.csv", synth_world / "val.csv"])
    return synth_world, out


def test_extract_writes_the_digest_of_a_complete_store_only(world_and_dets, tmp_path,
                                                           monkeypatch):
    world, dets = world_and_dets
    whole = tmp_path / "whole.zarr"
    assert extract.run(CFG, world / "videos", dets, str(whole)) == []
    digest = (tmp_path / "whole.digest").read_bytes()
    assert matches(whole)
    assert extract.run(CFG, world / "videos", dets, str(whole)) == []    # all reused
    assert (tmp_path / "whole.digest").read_bytes() == digest

    # --shard: the first shard to end leaves none; the last one writes the whole store's,
    # the same bytes as one process's
    sharded = tmp_path / "sharded.zarr"
    assert extract.run(CFG, world / "videos", dets, str(sharded), shard=(1, 2)) == []
    assert not digest_path(sharded).exists()
    assert extract.run(CFG, world / "videos", dets, str(sharded), shard=(0, 2)) == []
    assert digest_path(sharded).read_bytes() == digest

    # a run that writes removes it first: interrupted, it leaves no (stale) digest ...
    real = extract._Context.forward

    def dies(self, st, ks, writer):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract._Context, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        extract.run(_cfg(flip=True), world / "videos", dets, str(whole))
    assert not digest_path(whole).exists()
    # ... and resumed to the end, it writes the new store's
    monkeypatch.setattr(extract._Context, "forward", real)
    assert extract.run(_cfg(flip=True), world / "videos", dets, str(whole)) == []
    assert matches(whole) and digest_path(whole).read_bytes() != digest


def test_extract_with_a_failed_video_leaves_no_digest(world_and_dets, tmp_path):
    world, dets = world_and_dets
    videos = tmp_path / "videos"
    shutil.copytree(world / "videos", videos)
    next(videos.glob("val_000.*")).unlink()                 # detections, but no video
    out = tmp_path / "f.zarr"
    failures = extract.run(CFG, videos, dets, str(out))
    assert len(failures) == 1 and "val_000" in failures[0]
    assert not digest_path(out).exists()


# ---- bank ------------------------------------------------------------------------------

def test_bank_writes_the_digest_of_a_complete_bank_only(tmp_path):
    videos = {"vid_a": 6, "vid_b": 4}
    features = str(tmp_path / "f.zarr")
    make_feature_store(features, videos)
    dets = tmp_path / "d.parquet"
    write_detections(det_rows(videos, shift=0.05), dets, {"source": "test"})
    cfg = bank.BankConfig(kind="lfb")
    whole = tmp_path / "lfb.zarr"
    assert bank.run(cfg, features, dets, str(whole)) == []
    digest = (tmp_path / "lfb.digest").read_bytes()
    assert matches(whole)
    bank.run(cfg, features, dets, str(whole))                  # all reused: the same file
    assert (tmp_path / "lfb.digest").read_bytes() == digest
    sharded = tmp_path / "sharded.zarr"
    bank.run(cfg, features, dets, str(sharded), shard=(0, 2))
    assert not digest_path(sharded).exists()
    bank.run(cfg, features, dets, str(sharded), shard=(1, 2))
    assert digest_path(sharded).read_bytes() == digest
    bank.run(bank.BankConfig(kind="lfb", det_score_thr=0.96), features, dets, str(whole))
    assert matches(whole) and digest_path(whole).read_bytes() != digest
