"""Shared fixtures: tiny synthetic data made on the fly (no downloads, no weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.artifacts.detections import write_detections
from pipeline.artifacts.features import FeatureSpec, FeatureStore, ViewSpec
from pipeline.artifacts.labelmap import LabelMap, write_labelmap

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "videos"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory) -> Path:
    """A tiny synthetic world (videos + labels) made by the synth stage."""
    from pipeline import synth

    out = tmp_path_factory.mktemp("world")
    synth.run(synth.SynthConfig(num_train=2, num_val=1, duration=4, fps=8, width=96,
                                height=64), out)
    return out


LABELMAP = LabelMap(ids=(1, 2, 3, 5), names=("stand", "sit", "talk", "hold"),
                    superclasses=("pose", "pose", "person", "object"))


@pytest.fixture
def labelmap_file(tmp_path) -> Path:
    path = tmp_path / "labelmap.pbtxt"
    write_labelmap(LABELMAP, path)
    return path


def make_feature_store(url: str, videos: dict[str, int], channels: int = 8, size: int = 6,
                       seed: int = 0, flip: bool = False) -> FeatureStore:
    """A feature store of random maps: ``videos`` maps video_id -> keyframe count.

    Keyframes are at seconds 1..K.  Frames are 64x48, input 48x36 padded to 48x48.
    """
    rng = np.random.default_rng(seed)
    views = ["s36", "s36_flip"] if flip else ["s36"]
    spec = FeatureSpec("test", "random", True, 4, 1, 36, channels, tuple(views))
    store = FeatureStore(url, mode="a")
    for video, k in videos.items():
        store.begin_video(video, np.arange(1, k + 1), {**spec.to_dict(), "frame_size": [64, 48],
                                                       "fps": 8.0})
        base = rng.standard_normal((k, channels, size, size)).astype(np.float16)
        for name in views:
            vs = ViewSpec(name, 36, name.endswith("flip"), (48, 48), (0, 0, 48, 36), 48 / size)
            arr = store.create_view(video, vs, base.shape)
            arr[:] = base[..., ::-1] if vs.flip else base
        store.finish_video(video)
    return store


@pytest.fixture
def feature_store(tmp_path) -> str:
    url = str(tmp_path / "features.zarr")
    make_feature_store(url, {"vid_a": 4, "vid_b": 3})
    return url


def boxes_gt(videos: dict[str, int], labelmap: LabelMap = LABELMAP, seed: int = 0
             ) -> pd.DataFrame:
    """Two persons per keyframe; each has one pose and maybe another action."""
    rng = np.random.default_rng(seed)
    rows = []
    for video, k in videos.items():
        for t in range(1, k + 1):
            for pid, x in enumerate((0.1, 0.55)):
                box = (x, 0.2, x + 0.3, 0.9)
                rows.append((video, t, *box, int(rng.choice([1, 2])), pid))
                if rng.random() < 0.5:
                    rows.append((video, t, *box, int(rng.choice([3, 5])), pid))
    return pd.DataFrame(rows, columns=["video_id", "timestamp", "x1", "y1", "x2", "y2",
                                       "action_id", "person_id"])


@pytest.fixture
def detections_file(tmp_path) -> Path:
    gt = boxes_gt({"vid_a": 4, "vid_b": 3})
    det = gt[["video_id", "timestamp", "x1", "y1", "x2", "y2"]].drop_duplicates().assign(score=0.95)
    path = tmp_path / "detections.parquet"
    write_detections(det, path, {"source": "test"})
    return path


@pytest.fixture(scope="session")
def wide_clip(tmp_path_factory) -> tuple[Path, Path]:
    """A 16:9 video (128x72, 3 s at 8 fps: textured, with shapes moving to the right
    edge) in its own folder, and detections on its keyframes 1 and 2."""
    from pipeline.video import write_video

    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    base = rng.integers(30, 200, (72, 128, 3)).astype(np.uint8)
    frames = []
    for f in range(24):
        img = base.copy()
        img[10:40, 90 + f:110 + f] = (250, 40, 40)            # leaves through the right edge
        img[45:70, 5 + 2 * f:25 + 2 * f] = (30, 220, 60)
        frames.append(img)
    (root / "v").mkdir()
    write_video(frames, root / "v" / "wide.mp4", fps=8, lossless=True)
    dets = root / "d.parquet"
    write_detections(pd.DataFrame({"video_id": ["wide"] * 2, "timestamp": [1, 2],
                                   "x1": [0.1] * 2, "y1": [0.1] * 2, "x2": [0.5] * 2,
                                   "y2": [0.9] * 2, "score": [0.9] * 2}), dets, {})
    return root / "v", dets
