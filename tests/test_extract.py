"""Stage extract: clip sampling, geometry, the store it writes, decoding once, resume,
shards (also concurrent processes), fsspec URLs, failures."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from click.testing import CliRunner
from conftest import ROOT, SHARED_VIDEOS

from cli.main import cli
from pipeline import detect, extract, extract_check
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureStore, boxes_to_input
from pipeline.backbones import BACKBONES, build_backbone, feature_stride
from pipeline.shards import shard_items, stale_items
from pipeline.video import Video, VideoInfo, write_video


def _info(n, fps=10.0, times=None):
    return VideoInfo(None, n, fps, 64, 48, times)


# ---- clip sampling --------------------------------------------------------------------

def test_clip_indices_centred_and_clamped_in_native_frames():
    idx = extract.clip_indices(5.0, _info(100), frames=4, stride=2)
    assert idx.tolist() == [46, 48, 50, 52]
    assert extract.clip_indices(0.0, _info(100), 4, 2).tolist() == [0, 2, 4, 6]
    # too close to the end: the window takes the last frames
    assert extract.clip_indices(9.9, _info(100), 4, 2).tolist() == [93, 95, 97, 99]
    # a video shorter than the window: from the first frame, repeating the last one
    assert extract.clip_indices(1.0, _info(3), 4, 2).tolist() == [0, 2, 2, 2]


def test_clip_stride_counts_frames_at_clip_fps_whatever_the_video_rate():
    # 32 x 2 at 30 fps spans 62/30 s, on a 10 fps and on a 30 fps video alike
    t10 = extract.clip_times(20.0, _info(400, 10.0), 32, 2, clip_fps=30)
    t30 = extract.clip_times(20.0, _info(1200, 30.0), 32, 2, clip_fps=30)
    np.testing.assert_allclose(t10, t30)
    assert t10[16] == 20.0 and t10[-1] - t10[0] == pytest.approx(62 / 30)
    assert extract.clip_indices(20.0, _info(1200, 30.0), 4, 2, 30).tolist() == [596, 598, 600,
                                                                                602]
    assert extract.clip_indices(20.0, _info(400, 10.0), 4, 2, 30).tolist() == [199, 199, 200,
                                                                               201]


def test_clip_sampling_follows_real_frame_times_not_counts():
    # variable frame rate: 10 fps for 2 s, then 20 fps
    times = np.concatenate([np.arange(20) / 10, 2 + np.arange(40) / 20])
    info = _info(len(times), fps=15.0, times=times)
    assert info.index_at(2.5).tolist() == [30]
    assert extract.clip_indices(2.5, info, 3, 1, clip_fps=10).tolist() == [28, 30, 32]
    assert extract.clip_indices(1.0, info, 3, 1, clip_fps=10).tolist() == [9, 10, 11]


def test_keyframes_outside_the_video_are_an_error_that_mentions_the_offset():
    with pytest.raises(Exception, match="keyframe at 902 s is outside the video.*900"):
        extract.plan_clips(_info(100), np.array([2.0, 902.0]), 4, 2, None)


# ---- pre-processing geometry ------------------------------------------------------------

def test_preprocess_pads_each_side_to_the_multiple_and_records_valid_region():
    """The canvas keeps the frame's aspect ratio: each side is padded to the next multiple
    (a 16:9 frame at short side 36 is 64 x 36 -> 64 x 48), not to a square."""
    frames = np.full((2, 72, 128, 3), 200, np.uint8)
    x, size, valid = extract.preprocess(frames, 36, False, 16, (0.5,) * 3, (0.25,) * 3)
    assert x.shape == (3, 2, 48, 64) and size == (64, 48) and valid == (0, 0, 64, 36)
    assert float(x[:, :, 36:].abs().max()) == 0.0          # zero padding below the image
    assert float(x[:, :, :36].abs().min()) > 1.0           # the image fills the rest
    x, size, _ = extract.preprocess(frames[:, :, :72], 36, True, 16, (0.5,) * 3, (0.25,) * 3)
    assert x.shape == (3, 2, 48, 48) and size == (48, 48)  # a square frame: a square canvas
    frames = np.zeros((2, 60, 80, 3), np.uint8)            # 4:3 at 30: 40 x 30 -> 48 x 32
    assert extract.preprocess(frames, 30, False, 16, (0.5,) * 3, (0.5,) * 3)[1] == (48, 32)


def _square_video(path: Path, box=(0.25, 0.25, 0.5, 0.75), w=96, h=64, n=12, fps=4):
    frame = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = (int(round(v)) for v in (box[0] * w, box[1] * h, box[2] * w, box[3] * h))
    frame[y1:y2, x1:x2] = 255
    write_video([frame] * n, path, fps=fps)


# ---- the stage ----------------------------------------------------------------------------

CFG = extract.ExtractConfig(backbone="mc3_18", random_init=True, clip_frames=4, clip_stride=2,
                            clip_fps=8, short_side=16, batch_size=2, num_workers=0)


def _cfg(**kw) -> extract.ExtractConfig:
    return extract.ExtractConfig(**{**CFG.__dict__, **kw})


@pytest.fixture(scope="module")
def world_and_dets(synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det.parquet"
    detect.run(detect.DetectConfig(source="gt"), synth_world / "videos", out,
               [synth_world / "train.csv", synth_world / "val.csv"])
    return synth_world, out


@pytest.fixture(scope="module")
def reference(world_and_dets, tmp_path_factory) -> str:
    """The store of one uninterrupted, single-process run of CFG."""
    world, dets = world_and_dets
    url = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    assert extract.run(CFG, world / "videos", dets, url) == []
    return url


def assert_same_store(a: str, b: str) -> None:
    sa, sb = FeatureStore(a), FeatureStore(b)
    assert sa.videos() == sb.videos() and sa.videos()
    for v in sa.videos():
        assert sa.attrs(v) == sb.attrs(v)
        np.testing.assert_array_equal(sa.timestamps(v), sb.timestamps(v))
        for name in sa.spec(v).views:
            assert sa.view(v, name) == sb.view(v, name)
            np.testing.assert_array_equal(sa.read(v, name), sb.read(v, name))


def test_store_contents_and_spec(reference):
    store = FeatureStore(reference)
    assert store.videos() == ["train_000", "train_001", "val_000"]
    spec = store.spec("val_000")
    assert spec.random_init and spec.weights == "random-init(seed=0)" and spec.views == ("s16",)
    assert (spec.backbone, spec.clip_frames, spec.clip_stride, spec.channels) == ("mc3_18", 4,
                                                                                 2, 512)
    assert spec.extra["clip_fps"] == 8 and spec.extra["dilate_last"] is False
    attrs = store.attrs("val_000")
    assert attrs["frame_size"] == [96, 64] and attrs["fps"] == pytest.approx(8)
    feats = store.read("val_000", "s16")
    assert feats.dtype == np.float16 and feats.shape == (3, 512, 1, 2)   # 32x16 canvas
    view = store.view("val_000", "s16")
    assert view.valid == (0, 0, 24, 16) and view.input_size == (32, 16)
    assert view.feature_stride == 16.0
    np.testing.assert_array_equal(store.timestamps("val_000"), [1, 2, 3])
    assert store.root["val_000"]["s16"].chunks == (1, 512, 1, 2)
    assert spec.extra["canvas"] == "per-side" and spec.extra["pad_multiple"] == 16


def test_check_accepts_what_extract_writes(world_and_dets, reference):
    world, dets = world_and_dets
    report = extract_check.check_store(reference, dets, world / "videos")
    assert report.ok and report.complete == ["train_000", "train_001", "val_000"]


def test_stored_maps_equal_the_backbone_on_the_sampled_clip(world_and_dets, reference):
    """The reference computation, one keyframe at a time, without the stage's plumbing."""
    world, _ = world_and_dets
    store = FeatureStore(reference)
    net, bb, _ = build_backbone("mc3_18", random_init=True)
    video = Video(world / "videos" / "train_001.mp4")
    for k, t in enumerate(store.timestamps("train_001")):
        idx = extract.clip_indices(float(t), video.info, 4, 2, clip_fps=8)
        x, _, _ = extract.preprocess(video.read(idx), 16, False, 16, bb.mean, bb.std)
        with torch.inference_mode():
            want = net(x[None]).mean(dim=2)[0].half().numpy()
        got = store.read("train_001", "s16", k)
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32),
                                   rtol=2e-2, atol=2e-3)


def test_non_learned_hoghof_backbone(world_and_dets, tmp_path):
    """hoghof runs through the same stage: stride 20, its own normalisation, no weights."""
    from pipeline.demo import extract_config

    world, dets = world_and_dets
    url = str(tmp_path / "hh.zarr")
    cfg = _cfg(backbone="hoghof", random_init=True, clip_frames=None, clip_stride=None,
               short_side=40, pad_multiple=20)                  # random_init: ignored
    assert extract.run(cfg, world / "videos", dets, url) == []
    store = FeatureStore(url)
    spec = store.spec("val_000")
    assert (spec.backbone, spec.weights, spec.random_init) == ("hoghof", "non-learned", False)
    bb = BACKBONES["hoghof"]                                      # its own clip defaults
    assert (spec.channels, spec.clip_frames, spec.clip_stride) == (bb.channels, bb.clip_frames,
                                                                   bb.clip_stride)
    view = store.view("val_000", "s40")
    assert view.input_size == (60, 40) and view.feature_stride == bb.stride   # 53 x 40
    feats = store.read("val_000", "s40")
    assert feats.shape == (3, bb.channels, 2, 3) and np.isfinite(feats).all()
    net, bb, _ = build_backbone("hoghof")
    video = Video(world / "videos" / "val_000.mp4")
    idx = extract.clip_indices(float(store.timestamps("val_000")[1]), video.info,
                               spec.clip_frames, spec.clip_stride, 8)
    x, _, (_, _, w, h) = extract.preprocess(video.read(idx), 40, False, 20, bb.mean, bb.std)
    want = net(x[None], image=(h, w)).mean(dim=2)[0].numpy()
    np.testing.assert_allclose(feats[1].astype(np.float32), want, rtol=1e-2, atol=1e-2)
    # the demo rebuilds the same settings from the spec (no weights to pass)
    again = extract_config(spec.to_dict(), device="cpu")
    assert (again.backbone, again.weights, again.pad_multiple) == ("hoghof", None, 20)
    with pytest.raises(ArtifactError, match=r"pad_multiple 32 must be 1 \(no padding\) or a "
                       r"multiple of hoghof's output stride 20 \(e.g. 160 or 20\)"):
        extract.run(_cfg(backbone="hoghof", pad_multiple=32), world / "videos", dets,
                    str(tmp_path / "bad.zarr"))


def test_views_map_boxes_onto_the_image_content(tmp_path):
    """A white square at a known box lands where boxes_to_input(view) says, flipped too."""
    box = np.array([[0.25, 0.25, 0.5, 0.75]])
    (tmp_path / "v").mkdir()
    _square_video(tmp_path / "v" / "sq.mp4", tuple(box[0]))
    dets = tmp_path / "d.parquet"
    write_detections(pd.DataFrame({"video_id": ["sq"], "timestamp": [1], "x1": [0.1],
                                   "y1": [0.1], "x2": [0.2], "y2": [0.2], "score": [0.9]}),
                     dets, {})
    url = str(tmp_path / "f.zarr")
    cfg = _cfg(short_side=32, scales=[48], flip=True)
    assert extract.run(cfg, tmp_path / "v", dets, url) == []
    store = FeatureStore(url)
    assert store.spec("sq").views == ("s32", "s32_flip", "s48", "s48_flip")
    frames = Video(tmp_path / "v" / "sq.mp4").read([4])
    for name in store.spec("sq").views:
        view = store.view("sq", name)
        x, size, valid = extract.preprocess(frames, view.scale, view.flip, 16, (0.0,) * 3,
                                            (1.0,) * 3)
        assert size == tuple(view.input_size) and valid == tuple(view.valid)
        img = x[:, 0].mean(0).numpy()                          # (S, S) in [0, 1]
        ys, xs = np.nonzero(img > 0.5)
        x1, y1, x2, y2 = boxes_to_input(box, view)[0]
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1, name
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1, name
        w, h = (v / view.feature_stride for v in view.input_size)
        assert store.read("sq", name).shape[-2:] == (h, w) and w > h, name   # 3:2: not square


def test_hoghof_features_inside_the_image_do_not_depend_on_the_padding(wide_clip, tmp_path):
    videos, dets = wide_clip
    maps = {}
    for pad in (20, 60):                          # canvas 140x140 (7x7 cells) or 180x180
        url = str(tmp_path / f"p{pad}.zarr")
        cfg = _cfg(backbone="hoghof", clip_frames=None, clip_stride=None, clip_fps=None,
                   short_side=72, flip=True, pad_multiple=pad)
        assert extract.run(cfg, videos, dets, url) == []
        store = FeatureStore(url)
        for name in store.spec("wide").views:
            maps[pad, name] = store.read("wide", name).astype(np.float32)
            assert tuple(store.view("wide", name).valid) == (0, 0, 128, 72)
    rows, cols = 4, 7                                        # ceil(72 / 20), ceil(128 / 20)
    for name in ("s72", "s72_flip"):
        a, b = (maps[pad, name][:, :, :rows, :cols] for pad in (20, 60))
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3, err_msg=name)
        assert np.abs(a).max() > 0.5                         # not a blank map


def test_each_needed_frame_is_decoded_once(world_and_dets, reference, tmp_path, monkeypatch):
    world, dets = world_and_dets
    infos = {v: Video(world / "videos" / f"{v}.mp4").info for v in FeatureStore(reference).videos()}
    decoded: dict[str, list[int]] = {}
    real = Video._decode

    def spy(self, indices):
        decoded.setdefault(self.path.stem, []).extend(indices)
        return real(self, indices)

    monkeypatch.setattr(Video, "_decode", spy)
    url = str(tmp_path / "f.zarr")
    cfg = _cfg(clip_frames=12, clip_stride=1, segment_keyframes=1, piece_frames=2)
    assert extract.run(cfg, world / "videos", dets, url) == []
    store = FeatureStore(url)
    for v in store.videos():
        clips = extract.plan_clips(infos[v], store.timestamps(v).astype(float), 12, 1, 8)
        needed = set(np.unique(clips).tolist())
        assert len(needed) < clips.size                  # neighbouring clips share frames
        assert sorted(decoded[v]) == sorted(needed | {0})  # frame 0 is read when opening
        assert len(decoded[v]) == len(set(decoded[v]))


def test_workers_and_segments_give_the_same_store(world_and_dets, reference, tmp_path):
    world, dets = world_and_dets
    url = str(tmp_path / "f.zarr")
    cfg = _cfg(num_workers=2, segment_keyframes=1, piece_frames=1)
    assert extract.run(cfg, world / "videos", dets, url) == []
    assert_same_store(reference, url)


def test_interrupted_run_resumes_from_the_first_incomplete_video(world_and_dets, reference,
                                                                 tmp_path, monkeypatch):
    world, dets = world_and_dets
    url = str(tmp_path / "f.zarr")
    real = extract._Context.forward
    calls = []

    def dies_on_second_video(self, st, ks, writer):
        calls.append(st.video)
        if st.video == "train_001" and calls.count("train_001") == 2:
            raise KeyboardInterrupt
        return real(self, st, ks, writer)

    monkeypatch.setattr(extract._Context, "forward", dies_on_second_video)
    with pytest.raises(KeyboardInterrupt):
        extract.run(CFG, world / "videos", dets, url)
    store = FeatureStore(url)
    assert store.videos() == ["train_000"]
    assert store.videos(complete_only=False) == ["train_000", "train_001"]
    report = extract_check.check_store(url, dets, world / "videos")
    assert (report.complete, report.incomplete, report.missing) == (["train_000"],
                                                                    ["train_001"], ["val_000"])
    monkeypatch.setattr(extract._Context, "forward", real)
    begun = []
    real_begin = FeatureStore.begin_video
    monkeypatch.setattr(FeatureStore, "begin_video",
                        lambda self, v, *a, **k: begun.append(v) or real_begin(self, v, *a, **k))
    assert extract.run(CFG, world / "videos", dets, url) == []
    assert begun == ["train_001", "val_000"]
    assert_same_store(reference, url)
    assert extract_check.check_store(url, dets, world / "videos").ok


def test_spec_change_redoes_and_shards_partition(world_and_dets, reference, tmp_path):
    world, dets = world_and_dets
    a = str(tmp_path / "a.zarr")
    assert shard_items(["c", "a", "b"], (0, 2)) == ["a", "c"]
    extract.run(CFG, world / "videos", dets, a, shard=(1, 2))
    assert FeatureStore(a).videos() == ["train_001"]
    extract.run(CFG, world / "videos", dets, a, shard=(0, 2))
    assert_same_store(reference, a)
    extract.run(_cfg(flip=True), world / "videos", dets, a)
    assert FeatureStore(a).spec("val_000").views == ("s16", "s16_flip")
    np.testing.assert_array_equal(FeatureStore(a).read("val_000", "s16"),
                                  FeatureStore(reference).read("val_000", "s16"))


def test_fsspec_urls(world_and_dets, reference, tmp_path):
    world, dets = world_and_dets
    for url in ("memory://acar-extract-test/f.zarr", f"file://{tmp_path}/f.zarr"):
        assert extract.run(CFG, world / "videos", dets, url) == []
        assert_same_store(reference, url)


def test_store_creation_race_is_retried(tmp_path, monkeypatch):
    real_init = FeatureStore.__init__
    tries = []

    def racy(self, url, mode="r", kind="features"):
        tries.append(url)
        if len(tries) == 1:
            raise zarr.errors.ContainsGroupError("created by another process meanwhile")
        real_init(self, url, mode, kind)

    monkeypatch.setattr(FeatureStore, "__init__", racy)
    store = extract.open_output(str(tmp_path / "f.zarr"))
    assert len(tries) == 2 and store.videos() == []


def test_time_offset_and_bad_videos(world_and_dets, reference, tmp_path):
    world, dets = world_and_dets
    df = pd.read_parquet(dets)
    df = df[df["video_id"] == "val_000"].assign(timestamp=lambda d: d["timestamp"] + 900)
    extra = pd.DataFrame({"video_id": ["missing", "empty"], "timestamp": [1, 1], "x1": 0.1,
                          "y1": 0.1, "x2": 0.2, "y2": 0.2, "score": 0.5})
    shifted = tmp_path / "d.parquet"
    write_detections(pd.concat([df, extra]), shifted, {"time_offset": 900})
    videos = tmp_path / "videos"
    videos.mkdir()
    os.symlink(world / "videos" / "val_000.mp4", videos / "val_000.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    url = str(tmp_path / "f.zarr")
    failures = extract.run(CFG, videos, shifted, url)
    assert len(failures) == 2
    assert any(f.startswith(str(videos / "missing")) and "not found" in f for f in failures)
    assert any(f.startswith(str(videos / "empty.mp4")) and "empty" in f for f in failures)
    store = FeatureStore(url)
    assert store.videos() == ["val_000"]
    np.testing.assert_array_equal(store.timestamps("val_000"), [901, 902, 903])
    np.testing.assert_array_equal(store.read("val_000", "s16"),
                                  FeatureStore(reference).read("val_000", "s16"))
    # without the offset the keyframes fall outside the video: a clear failure
    res = CliRunner().invoke(cli, ["extract", "--videos", str(videos), "--detections",
                                   str(shifted), "--out", str(tmp_path / "g.zarr"),
                                   "--backbone", "mc3_18", "--random-init", "--clip-frames",
                                   "4", "--short-side", "16", "--time-offset", "0",
                                   "--num-workers", "0"])
    assert res.exit_code == 1 and "3 videos failed" in res.output
    assert "keyframe at 901 s is outside the video" in res.output


@pytest.mark.skipif(not (SHARED_VIDEOS / "pedestrians.mp4").exists(),
                    reason="../shared/videos/pedestrians.mp4 not present")
def test_real_video_near_start_and_end(tmp_path):
    dets = tmp_path / "d.parquet"
    write_detections(pd.DataFrame({"video_id": "pedestrians", "timestamp": [0, 20, 39],
                                   "x1": 0.1, "y1": 0.1, "x2": 0.2, "y2": 0.2, "score": 0.9}),
                     dets, {})
    url = str(tmp_path / "f.zarr")
    assert extract.run(_cfg(clip_fps=30, short_side=32), SHARED_VIDEOS, dets, url) == []
    store = FeatureStore(url)
    assert store.attrs("pedestrians")["frame_size"] == [768, 576]
    assert store.attrs("pedestrians")["fps"] == pytest.approx(10)
    view = store.view("pedestrians", "s32")
    assert view.valid == (0, 0, 43, 32) and view.input_size == (48, 32)
    assert store.read("pedestrians", "s32").shape == (3, 512, 2, 3)


# ---- real processes: concurrent shards, one killed and resumed ---------------------------

DIES = """
import os, signal
from pipeline import extract
real, calls = extract._Context.forward, []
def forward(self, st, ks, writer):
    calls.append(st.video)
    if calls.count(os.environ["ACAR_TEST_DIE_IN"]) == 2:   # half-way through that video
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, st, ks, writer)
extract._Context.forward = forward
from cli.main import main
main()
"""


def _params(tmp_path: Path) -> Path:
    params = tmp_path / "stages.yaml"
    params.write_text(yaml.safe_dump({"extract": {k: v for k, v in CFG.__dict__.items()
                                                  if v is not None}}))
    return params


def _acar(params: Path, *args: str, die_in: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}      # the same float sums as this process
    code = ["-m", "cli.main"]
    if die_in:
        code, env["ACAR_TEST_DIE_IN"] = ["-c", DIES], die_in
    return subprocess.Popen([sys.executable, *code, "--params", str(params), "extract", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def test_concurrent_shards_and_a_killed_process_resumed(world_and_dets, reference, tmp_path,
                                                        monkeypatch):
    world, dets = world_and_dets
    url = str(tmp_path / "f.zarr")                       # does not exist yet: both create it
    params = _params(tmp_path)
    args = ["--videos", str(world / "videos"), "--detections", str(dets), "--out", url]
    # shard 0/2 = train_000, val_000 (SIGKILLed half-way through val_000); 1/2 = train_001
    killed = _acar(params, *args, "--shard", "0/2", "--num-workers", "1", die_in="val_000")
    normal = _acar(params, *args, "--shard", "1/2")
    for proc in (killed, normal):
        proc.communicate(timeout=300)
        try:
            os.killpg(proc.pid, signal.SIGKILL)          # orphaned DataLoader workers, if any
        except ProcessLookupError:
            pass
    assert killed.returncode == -signal.SIGKILL and normal.returncode == 0
    root = json.loads((Path(url) / "zarr.json").read_text())
    assert root["attributes"]["acar"] == {"kind": "features", "version": 1}
    store = FeatureStore(url)
    assert store.videos() == ["train_000", "train_001"]
    assert store.videos(complete_only=False) == ["train_000", "train_001", "val_000"]
    res = subprocess.run([sys.executable, "-m", "cli.main", "extract", "--check", "--out", url,
                          "--detections", str(dets)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout.splitlines()[0].startswith("val_000: incomplete")
    begun = []
    real_begin = FeatureStore.begin_video
    monkeypatch.setattr(FeatureStore, "begin_video",
                        lambda self, v, *a, **k: begun.append(v) or real_begin(self, v, *a, **k))
    assert extract.run(CFG, world / "videos", dets, url, shard=(0, 2)) == []
    assert begun == ["val_000"]
    assert_same_store(reference, url)


def test_complete_video_is_redone_when_its_source_or_keyframes_change(tmp_path):
    """extract's store persists across `dvc repro`: stale features must not survive."""
    from pipeline import synth
    from pipeline.artifacts.detections import read_detections, write_detections

    world = tmp_path / "w"
    synth.run(synth.SynthConfig(num_train=1, num_val=0, duration=3, width=64, height=48), world)
    det = tmp_path / "d.parquet"
    detect.run(detect.DetectConfig(source="gt"), world / "videos", det, [world / "train.csv"])
    cfg = extract.ExtractConfig(backbone="r3d_18", random_init=True, clip_frames=2,
                                clip_stride=1, short_side=32, num_workers=0)
    url = str(tmp_path / "f.zarr")
    extract.run(cfg, world / "videos", det, url)
    before = FeatureStore(url).read("train_000", "s32")
    # same spec, different video content (another seed): must be extracted again
    other = tmp_path / "w2"
    synth.run(synth.SynthConfig(seed=5, num_train=1, num_val=0, duration=3, width=64,
                                height=48), other)
    (world / "videos" / "train_000.mp4").write_bytes(
        (other / "videos" / "train_000.mp4").read_bytes())
    assert extract_check.check_store(url, det, world / "videos").inconsistent == {"train_000": [
        f"{world / 'videos' / 'train_000.mp4'} is not the file it was extracted from (a rerun "
        "of extract would redo it)"]}
    extract.run(cfg, world / "videos", det, url)
    assert not np.array_equal(FeatureStore(url).read("train_000", "s32"), before)
    # fewer keyframes in the detections: redone with the new keyframe list
    df, meta = read_detections(det)
    write_detections(df[df.timestamp != 2], det, meta)
    assert extract_check.check_store(url, det).inconsistent == {"train_000": [
        "keyframes differ: 2 stored, 1 expected; t=2 not expected"]}
    extract.run(cfg, world / "videos", det, url)
    np.testing.assert_array_equal(FeatureStore(url).timestamps("train_000"), [1])


# ---- acar extract --check ------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _check(*args: str):
    return CliRunner().invoke(cli, ["extract", "--check", *map(str, args)])


def _dets_with(path: Path, videos: dict[str, int]) -> Path:
    """Detections with one box on keyframes 1..K of each video."""
    write_detections(pd.DataFrame([(v, t, 0.1, 0.1, 0.5, 0.9, 0.9) for v, k in videos.items()
                                   for t in range(1, k + 1)],
                                  columns=["video_id", "timestamp", "x1", "y1", "x2", "y2",
                                           "score"]), path, {})
    return path


def test_check_passes_on_a_complete_store_and_writes_nothing(feature_store, detections_file):
    before = _snapshot(Path(feature_store))
    res = _check("--out", feature_store, "--detections", detections_file)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"{feature_store}: 2 videos complete, 0 missing, 0 incomplete, 0 inconsistent"]
    assert _check("--out", feature_store).exit_code == 0          # the store's own groups
    assert _snapshot(Path(feature_store)) == before


def test_check_reports_missing_videos(feature_store, tmp_path):
    dets = _dets_with(tmp_path / "d.parquet", {"vid_a": 4, "vid_b": 3, "vid_c": 2})
    res = _check("--out", feature_store, "--detections", dets)
    assert res.exit_code == 1
    assert res.output.splitlines() == [
        "vid_c: missing (no group in the store)",
        f"{feature_store}: 2 videos complete, 1 missing, 0 incomplete, 0 inconsistent"]
    # --shard i/N checks that shard's videos only (sorted a, b, c: 1/2 is vid_b)
    assert _check("--out", feature_store, "--detections", dets, "--shard", "1/2").exit_code == 0
    assert _check("--out", feature_store, "--detections", dets, "--shard", "0/2").exit_code == 1
    # without detections, the files of --videos are the videos that should be there
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in ("vid_a", "vid_d"):
        (videos / f"{v}.mp4").write_bytes(b"")
    res = _check("--out", feature_store, "--videos", videos)
    assert res.exit_code == 1 and "vid_d: missing" in res.output
    assert "1 videos complete, 1 missing" in res.output and "(1 other videos" in res.output


def test_check_reports_an_interrupted_write(feature_store, tmp_path):
    store = FeatureStore(feature_store, mode="a")
    spec = store.spec("vid_a")
    store.begin_video("vid_c", np.arange(1, 3), {**spec.to_dict(), "frame_size": [64, 48],
                                                 "fps": 8.0})
    store.create_view("vid_c", store.view("vid_a", "s36"), (2, 8, 6, 6))[:1] = 1.0
    dets = _dets_with(tmp_path / "d.parquet", {"vid_a": 4, "vid_b": 3, "vid_c": 2})
    res = _check("--out", feature_store, "--detections", dets)
    assert res.exit_code == 1
    assert res.output.splitlines()[0].startswith("vid_c: incomplete (not marked complete")
    assert "2 videos complete, 0 missing, 1 incomplete, 0 inconsistent" in res.output


def _set_attr(video: str, **attrs):
    def change(store: FeatureStore) -> None:
        grp = store.root[video]
        grp.attrs["acar"] = {**grp.attrs["acar"], **attrs}
    return change


def _replace_view(dtype: str, shape: tuple[int, ...]):
    def change(store: FeatureStore) -> None:
        view = store.view("vid_b", "s36")
        del store.root["vid_b"]["s36"]
        store.create_view("vid_b", view, shape, dtype)[:] = 1
    return change


def _drop_shard(store: FeatureStore) -> None:
    grp, view = store.root["vid_b"], store.view("vid_b", "s36")
    del grp["s36"], grp["timestamps"]
    grp.create_array("timestamps", data=np.arange(1, 41, dtype=np.int32))
    store.create_view("vid_b", view, (40, 8, 6, 6))[:32] = 1.0   # shard 0 of 2, not 1


@pytest.mark.parametrize("change, problem", [
    (_set_attr("vid_b", channels=16),
     ["vid_b: view s36: shape (3, 8, 6, 6), expected (3, 16, 6, 6)",
      "vid_b: spec differs from the store's (that of 1 of 2 videos): channels 16 (store: 8)"]),
    (_set_attr("vid_b", extra={"amp": True}),
     ["vid_b: spec differs from the store's (that of 1 of 2 videos): extra.amp True (store: "
      "None)"]),
    (_set_attr("vid_b", frame_size=None), ["vid_b: frame_size None is not [W, H]"]),
    (_set_attr("vid_b", views=["s36", "s72"]),
     ["vid_b: view s72: array missing",
      "vid_b: spec differs from the store's (that of 1 of 2 videos): views ['s36', 's72'] "
      "(store: ['s36'])"]),
    (_replace_view("float32", (3, 8, 6, 6)), ["vid_b: view s36: dtype float32, expected float16"]),
    (_replace_view("float16", (3, 8, 5, 6)), ["vid_b: view s36: shape (3, 8, 5, 6), expected "
                                              "(3, 8, 6, 6)"]),
    (_drop_shard, ["vid_b: keyframes differ: 40 stored, 3 expected; t=4,5,6,7,8,... (37) not "
                   "expected",
                   "vid_b: view s36: 1 of 2 shards not stored (would read as zeros)"]),
])
def test_check_reports_inconsistent_videos(feature_store, detections_file, change, problem):
    change(FeatureStore(feature_store, mode="a"))
    before = _snapshot(Path(feature_store))
    res = _check("--out", feature_store, "--detections", detections_file)
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert len(lines) == len(problem) + 1
    for line, want in zip(lines, problem, strict=False):
        assert line.startswith(want), line
    assert lines[-1] == (f"{feature_store}: 1 videos complete, 0 missing, 0 incomplete, "
                         "1 inconsistent")
    assert _snapshot(Path(feature_store)) == before


def test_check_works_on_fsspec_urls(tmp_path):
    from conftest import make_feature_store

    url = "memory://acar-check-test/features.zarr"
    make_feature_store(url, {"vid_a": 4, "vid_b": 3})
    dets = _dets_with(tmp_path / "d.parquet", {"vid_a": 4, "vid_b": 3})
    assert extract_check.check_store(url, dets).complete == ["vid_a", "vid_b"]
    res = _check("--out", url, "--detections", dets)
    assert res.exit_code == 0 and res.output.startswith(f"{url}: 2 videos complete, 0 missing")
    _set_attr("vid_a", complete=False)(FeatureStore(url, mode="a"))
    report = extract_check.check_store(url, dets)
    assert not report.ok and report.incomplete == ["vid_a"]
    local = tmp_path / "f.zarr"
    make_feature_store(str(local), {"vid_a": 4, "vid_b": 3})
    assert extract_check.check_store(f"file://{local}", dets).ok


def test_check_bad_store_is_a_one_line_error(tmp_path, detections_file):
    res = subprocess.run([sys.executable, "-m", "cli.main", "extract", "--check", "--out",
                          str(tmp_path / "nope.zarr")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'nope.zarr'}: no Zarr "
                                                   "store here")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"bad.zarr: cannot read the store \(JSONDecodeError"):
        extract_check.check_store(str(tmp_path / "bad.zarr"))
    FeatureStore(str(tmp_path / "bank.zarr"), mode="a", kind="bank")
    with pytest.raises(ArtifactError, match="bank.zarr: not an acar features store"):
        extract_check.check_store(str(tmp_path / "bank.zarr"), detections_file)
    res = CliRunner().invoke(cli, ["extract", "--out", str(tmp_path / "f.zarr")])
    assert res.exit_code == 2 and "--videos and --detections are required" in res.output


def test_check_does_not_import_torch():
    """--check must start fast on a login node: metadata only, no torch."""
    code = "import sys, pipeline.extract_check; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_cudnn_benchmark_is_restored_after_a_run():
    before = torch.backends.cudnn.benchmark
    for setting in (False, True):
        torch.backends.cudnn.benchmark = setting
        with extract.cudnn_benchmark(True):
            assert torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark is setting
        with pytest.raises(RuntimeError), extract.cudnn_benchmark(True):
            raise RuntimeError("a failing run")
        assert torch.backends.cudnn.benchmark is setting
        with extract.cudnn_benchmark(False):             # a cpu run leaves it as it is
            assert torch.backends.cudnn.benchmark is setting
    torch.backends.cudnn.benchmark = before


def test_default_pad_multiple_fits_the_backbone():
    """stages.yaml leaves pad_multiple unset: switching backbones must not break it."""
    for name, bb in BACKBONES.items():
        for dilate in (False, True) if bb.resnet else (False,):
            cfg = extract.ExtractConfig(backbone=name, dilate_last=dilate)
            pad, stride = extract.default_pad_multiple(cfg), feature_stride(bb, dilate)
            # i3d and SlowFast run unpadded, as the official code does; the others pad to
            # the next whole cell (one cell at most)
            assert pad == (1 if bb.family in ("i3d", "slowfast") else stride), (name, dilate)


# ---- issue 19: stale groups, non-finite features, two writers, --check --values, empty -----

def _copy_store(src: str, dst: Path) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def _add_stale(url: str, video: str) -> None:
    """A complete group of a video that the detections no longer have (issue 19 item 4)."""
    store, ref = FeatureStore(url, mode="a"), FeatureStore(url)
    first = ref.videos()[0]
    store.begin_video(video, ref.timestamps(first), ref.attrs(first))
    for name in ref.spec(first).views:
        store.create_view(video, ref.view(first, name), ref.read(first, name).shape)[:] = \
            ref.read(first, name)
    store.finish_video(video)


def test_groups_of_videos_not_in_the_input_are_removed(world_and_dets, reference, tmp_path):
    world, dets = world_and_dets
    url = _copy_store(reference, tmp_path / "f.zarr")
    _add_stale(url, "train_077")
    assert "train_077" in FeatureStore(url).videos()
    assert extract.run(CFG, world / "videos", dets, url) == []
    assert FeatureStore(url).videos() == FeatureStore(reference).videos()
    assert_same_store(reference, url)


def test_a_group_of_an_older_layout_is_rebuilt_not_reused(world_and_dets, reference,
                                                         tmp_path):
    """A complete group written by an older acar (no ``layout``, arrays without zarr
    dimension_names) is rebuilt: the persisted store then equals a fresh build (#19 item
    4), which a reuse on the spec alone left different (dvc.lock hashes of a fresh clone)."""
    import zarr

    world, dets = world_and_dets
    url = _copy_store(reference, tmp_path / "f.zarr")
    root = zarr.open_group(url, mode="a")
    grp = root["val_000"]
    attrs = dict(grp.attrs["acar"])
    del attrs["layout"]
    grp.attrs["acar"] = attrs                   # as an acar before layout 2 wrote it
    assert not FeatureStore(url).is_current("val_000")
    assert FeatureStore(url).is_current("train_000")
    extract.run(CFG, world / "videos", dets, url)
    assert FeatureStore(url).is_current("val_000")
    assert_same_store(reference, url)
    view = zarr.open_group(url, mode="r")["val_000"]["s16"]
    assert view.metadata.dimension_names == ("keyframe", "channel", "y", "x")


def test_a_sharded_run_removes_only_the_stale_groups_of_its_shard(world_and_dets, reference,
                                                                  tmp_path):
    world, dets = world_and_dets
    url = _copy_store(reference, tmp_path / "f.zarr")
    stale = ["old_a", "old_b", "old_c", "old_d"]
    for v in stale:
        _add_stale(url, v)
    mine = stale_items(stale, [], (0, 2))
    assert 0 < len(mine) < len(stale)           # the test covers both shards
    extract.run(CFG, world / "videos", dets, url, shard=(0, 2))
    left = set(FeatureStore(url).videos()) - set(FeatureStore(reference).videos())
    assert left == set(stale) - set(mine)
    extract.run(CFG, world / "videos", dets, url, shard=(1, 2))
    assert_same_store(reference, url)
    assert FeatureStore(url).videos() == FeatureStore(reference).videos()


class _NanOnce(torch.nn.Module):
    """The backbone, but the ``call``-th forward pass gives NaN for clip ``clip``."""

    def __init__(self, net, call: int, clip: int):
        super().__init__()
        self.net, self.call, self.clip, self.calls = net, call, clip, 0

    def forward(self, x, **kw):
        y = self.net(x, **kw)
        self.calls += 1
        if self.calls == self.call:
            y = y.clone()
            y[self.clip, 0, 0] = float("nan")
        return y


def test_a_non_finite_feature_is_never_written(world_and_dets, reference, tmp_path,
                                               monkeypatch):
    world, dets = world_and_dets

    def nan_backbone(*args, **kw):
        net, bb, identity = build_backbone(*args, **kw)
        return _NanOnce(net, call=1, clip=1), bb, identity

    monkeypatch.setattr(extract, "build_backbone", nan_backbone)
    url = str(tmp_path / "f.zarr")
    failures = extract.run(CFG, world / "videos", dets, url)
    ref = FeatureStore(reference)
    t = int(ref.timestamps("train_000")[1])     # call 1 = keyframes 0, 1 (batch 2); clip 1
    assert failures == [f"{world / 'videos' / 'train_000.mp4'}: non-finite feature (nan or "
                        f"inf, float16 range included) at keyframe t={t} (view s16); the "
                        "video is not written"]
    store = FeatureStore(url)
    assert store.videos(complete_only=False) == ["train_001", "val_000"]
    for v in store.videos():
        np.testing.assert_array_equal(store.read(v, "s16"), ref.read(v, "s16"))


def test_a_second_unsharded_writer_is_a_one_line_error(world_and_dets, tmp_path, monkeypatch):
    """issue 19 item 10: two writers on one store gave a ContainsArrayError traceback."""
    world, dets = world_and_dets
    real = FeatureStore.create_view

    def raced(self, video, view, shape, dtype="float16"):
        real(self, video, view, shape, dtype)      # the other process got there first
        return real(self, video, view, shape, dtype)

    monkeypatch.setattr(FeatureStore, "create_view", raced)
    url = str(tmp_path / "f.zarr")
    with pytest.raises(ArtifactError) as err:
        extract.run(CFG, world / "videos", dets, url)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{url}: video 'train_000' was written by "
                                              "another process meanwhile (ContainsArrayError)")
    assert "--shard i/N" in msg


def _shard_file(url: str, video: str, view: str) -> Path:
    files = [p for p in (Path(url) / video / view).glob("c.*") if p.is_file()]  # flat keys
    assert len(files) == 1
    return files[0]


def test_check_values_finds_a_truncated_shard(feature_store, detections_file):
    """issue 19 item 10: a truncated shard passed --check, then gave a 109-line traceback."""
    shard = _shard_file(feature_store, "vid_a", "s36")
    shard.write_bytes(shard.read_bytes()[:-40])
    assert _check("--out", feature_store, "--detections", detections_file).exit_code == 0
    before = _snapshot(Path(feature_store))
    res = _check("--values", "--out", feature_store, "--detections", detections_file)
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith(
        "vid_a: view s36: shard of keyframes 0-3 is unreadable (truncated or corrupt: ")
    assert lines[1].endswith("1 videos complete, 0 missing, 0 incomplete, 1 inconsistent")
    assert _snapshot(Path(feature_store)) == before


def test_check_values_finds_non_finite_values(feature_store, detections_file):
    """issue 19 item 2: --check reported a store holding a NaN as fine."""
    store = FeatureStore(feature_store, mode="a")
    arr = store.root["vid_b"]["s36"]
    row = np.asarray(arr[1])
    row[3, 2, 1] = np.nan
    arr[1] = row
    assert _check("--out", feature_store, "--detections", detections_file).exit_code == 0
    res = _check("--values", "--out", feature_store, "--detections", detections_file)
    assert res.exit_code == 1
    assert res.output.splitlines()[0] == ("vid_b: view s36: non-finite values (nan or inf) at "
                                          "1 keyframes: t=2")


def test_check_of_a_store_without_a_video_fails(tmp_path):
    """issue 19 item 8: '0 videos complete, 0 missing, ...' passed with exit 0."""
    url = str(tmp_path / "f.zarr")
    FeatureStore(url, mode="a")
    res = _check("--out", url)
    assert res.exit_code == 1
    assert res.output.splitlines()[0] == (f"{url}: no video to check (an empty store, "
                                          "detections or videos folder; --allow-empty "
                                          "accepts it)")
    assert _check("--out", url, "--allow-empty").exit_code == 0
