"""Stage ``extract``: backbone features of every keyframe -> a Zarr feature store.

For each video and each keyframe timestamp found in the detections, a clip of
``clip_frames`` frames at ``clip_stride`` centred on the keyframe is decoded, scaled
so that its short side is ``scale``, zero-padded to a square, normalised, run through
the backbone and averaged over time: one (C, H, W) float16 map per keyframe and view.
The layout is :mod:`pipeline.artifacts.features`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.detections import read_detections
from .artifacts.features import FeatureSpec, FeatureStore, ViewSpec
from .backbones import Backbone, build_backbone
from .video import VideoInfo, list_videos, open_video, read_frames


@dataclass
class ExtractConfig:
    backbone: str = "r2plus1d_18"
    weights: str | None = None        # None: torchvision's Kinetics weights (downloads)
    random_init: bool = False         # explicit; recorded in the store attributes
    seed: int = 0
    clip_frames: int | None = None    # None: the backbone's default
    clip_stride: int | None = None
    short_side: int = 256             # the default view's scale
    scales: list[int] = field(default_factory=list)  # extra test-time scales
    flip: bool = False                # also write flipped views
    pad_multiple: int = 32            # square input side is a multiple of this
    batch_size: int = 4               # clips per forward pass
    device: str = "auto"              # auto | cpu | cuda[:i]


def view_name(scale: int, flip: bool) -> str:
    return f"s{scale}" + ("_flip" if flip else "")


def clip_indices(t: float, info: VideoInfo, frames: int, stride: int) -> np.ndarray:
    """Frame indices of a clip centred on time ``t`` (s), clamped inside the video.

    The window keeps its length and is shifted (not truncated) to stay inside the
    video; a video shorter than the window repeats its last frames.
    """
    centre = int(round(t * info.fps))
    start = centre - (frames // 2) * stride
    span = (frames - 1) * stride
    start = min(max(start, 0), max(info.num_frames - 1 - span, 0))
    return np.minimum(start + stride * np.arange(frames), info.num_frames - 1)


def preprocess(frames: np.ndarray, scale: int, flip: bool, pad_multiple: int,
               mean: tuple, std: tuple) -> tuple[torch.Tensor, tuple[int, int], tuple]:
    """(T, H0, W0, 3) uint8 -> ((3, T, S, S) float, (W, H) input size, valid box)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)   # (T, 3, H0, W0)
    if flip:
        x = x.flip(-1)
    h0, w0 = x.shape[-2:]
    r = scale / min(h0, w0)
    h, w = max(1, round(h0 * r)), max(1, round(w0 * r))
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    side = math.ceil(max(h, w) / pad_multiple) * pad_multiple
    x = F.pad(x, (0, side - w, 0, side - h))                              # zero-pad right/bottom
    return x.permute(1, 0, 2, 3).contiguous(), (side, side), (0, 0, w, h)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: ExtractConfig, videos_dir: str | os.PathLike, detections: str | os.PathLike,
        out: str, shard: tuple[int, int] = (0, 1)) -> list[str]:
    """Extract features for every video of the detections (this shard); returns failures."""
    dets, _ = read_detections(detections)
    paths = list_videos(videos_dir)
    wanted = sorted(set(dets["video_id"]) & set(paths))
    i, n = shard
    wanted = [v for k, v in enumerate(wanted) if k % n == i]
    net, bb, identity = build_backbone(cfg.backbone, cfg.weights, cfg.random_init, cfg.seed)
    device = _device(cfg.device)
    net = net.to(device)
    frames_n = cfg.clip_frames or bb.clip_frames
    stride_n = cfg.clip_stride or bb.clip_stride
    views = [(s, f) for s in dict.fromkeys([cfg.short_side, *cfg.scales])
             for f in ([False, True] if cfg.flip else [False])]
    spec = FeatureSpec(cfg.backbone, identity, cfg.random_init, frames_n, stride_n,
                       cfg.short_side, bb.channels, tuple(view_name(s, f) for s, f in views))
    store = FeatureStore(out, mode="a")
    todo = [v for v in wanted if not (store.is_complete(v) and _same_spec(store, v, spec))]
    failures: list[str] = []
    for video in tqdm(todo, desc="extract", unit="video"):
        ts = np.sort(dets.loc[dets["video_id"] == video, "timestamp"].unique()).astype(np.int32)
        try:
            _extract_video(store, video, paths[video], ts, net, bb, spec, views, cfg, device)
        except ArtifactError as err:
            failures.append(str(err))
            tqdm.write(f"error: {err}")
    return failures


def _same_spec(store: FeatureStore, video: str, spec: FeatureSpec) -> bool:
    """A complete video is reused only if it was made with the same spec."""
    return store.spec(video) == spec


@torch.inference_mode()
def _extract_video(store: FeatureStore, video: str, path, ts: np.ndarray, net, bb: Backbone,
                   spec: FeatureSpec, views, cfg: ExtractConfig, device) -> None:
    vr = open_video(path)
    h, w = vr[0].shape[:2]
    info = VideoInfo(path, len(vr), float(vr.get_avg_fps()), w, h)
    store.begin_video(video, ts, {**spec.to_dict(), "frame_size": [w, h], "fps": info.fps})
    arrays = {}
    for start in range(0, len(ts), cfg.batch_size):
        batch_ts = ts[start:start + cfg.batch_size]
        clips = [read_frames(vr, clip_indices(float(t), info, spec.clip_frames,
                                              spec.clip_stride)) for t in batch_ts]
        for scale, flip in views:
            prepared = [preprocess(c, scale, flip, cfg.pad_multiple, bb.mean, bb.std)
                        for c in clips]
            x = torch.stack([p[0] for p in prepared]).to(device)         # (B, 3, T, S, S)
            fmap = net(x).mean(dim=2)                                     # (B, C, H', W')
            name = view_name(scale, flip)
            if name not in arrays:
                size, valid = prepared[0][1], prepared[0][2]
                vs = ViewSpec(name, scale, flip, size, valid, size[0] / fmap.shape[-1])
                arrays[name] = store.create_view(video, vs, (len(ts), *fmap.shape[1:]))
            arrays[name][start:start + len(batch_ts)] = fmap.half().cpu().numpy()
    store.finish_video(video)
