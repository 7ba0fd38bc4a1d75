"""Stage ``extract``: backbone features of every keyframe -> a Zarr feature store.

For each video and each keyframe timestamp found in the detections, a clip of
``clip_frames`` frames is sampled around the keyframe, ``clip_stride`` frames apart
at ``clip_fps`` (30, AVA's rate: 32 x 2 spans 2.1 s whatever the video's own rate;
``clip_fps: null`` counts the video's own frames).  Sample times are matched to the
video's real frame times (:mod:`pipeline.video`); near the start or end the window is
shifted to stay inside the video.  Each frame is scaled so that its short side is
``scale``, normalised with the backbone's weights' statistics (or its own ``norm``
when it is non-learned, e.g. ``hoghof``), zero-padded right and bottom to the *canvas*:
each side rounded up on its own to a multiple of ``pad_multiple`` (by default the
backbone's output stride; for i3d and SlowFast 1, no padding at all, as the official code
runs them: their maps have ceil(side / stride) cells of any input, the last ones standing
out past the image), so a 16:9 frame stays 16:9, and the clip goes through the backbone;
the map is averaged over time: one (C, H, W) float16 map per keyframe and view,
of the video's own aspect ratio.  ``temporal: N`` keeps N time bins instead, one
(C, N, H, W) map (:func:`time_pool`): the backbone's map average-pooled over time into N
bins when it has at least N time steps; a backbone whose map has fewer (``hoghof``: one)
sees the clip cut into N consecutive sub-clips of ``clip_frames / N`` frames, each
sub-clip's map averaged over time being one bin.  On a padded canvas a learned backbone
sees the padding near the image's right and bottom edges (``bench/canvas.py`` measures it).
A backbone that ``sees_image`` (``hoghof``) is told the image's size and ignores the
padding, so its map inside the image does not depend on ``pad_multiple``.  Stores made
before (``LAYOUT`` < 3) padded to a square; they are rebuilt, and the spec records the
canvas (``extra.canvas``), so a head trained on square-canvas features is refused on
these.  The layout is :mod:`pipeline.artifacts.features`.

Throughput: the keyframes of a video are cut into segments of ``segment_keyframes``;
DataLoader workers decode and resize segments (each frame of a video is decoded once,
by the segment whose clips need it first) and send them in pieces of ``piece_frames``
frames, while the main process assembles clips, batches them through the backbone and
writes (in a background thread).  Memory stays bounded whatever the video's length.

Resume: a video group is marked complete last; a rerun skips complete groups whose
spec matches and rebuilds the others.  ``shard=(i, N)`` takes every N-th video of the
sorted detections, so N processes fill one store without touching each other's groups.
A run removes the store's digest (``data/features.zarr`` -> ``data/features.digest``,
:mod:`pipeline.artifacts.digest`) before writing, and writes it again at its end when the
store holds every video of the detections, complete (a shard: the one that ends last).

A run leaves its store equal to a fresh build of the same inputs: groups of videos that
are not in the detections are removed (a sharded run removes those that
:func:`pipeline.shards.stale_items` gives to its shard).  A feature that is not finite is
never written: its video fails with a line naming the video and the keyframe, and its group
is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from .artifacts import ArtifactError
from .artifacts.detections import read_detections
from .artifacts.digest import remove_digest, write_digest
from .artifacts.features import CANVAS, DTYPES, FeatureSpec, FeatureStore, ViewSpec, parse_temporal
from .backbones import build_backbone, feature_stride, get_backbone
from .backbones import default_pad_multiple as backbone_pad_multiple
from .distributed import worker_init
from .progress import progress
from .shards import shard_items, stale_items
from .video import (
    VIDEO_EXTS,
    Video,
    VideoInfo,
    fingerprint,
    list_videos,
    nearest_frames,
    no_videos_error,
)


@dataclass
class ExtractConfig:
    preset: str | None = None         # the papers' settings in one word: backbone, clip,
                                      # scales, short side (pipeline/backbones/presets.py)
    backbone: str = "r2plus1d_18"
    weights: str | None = None        # None: torchvision's Kinetics weights (downloads)
    random_init: bool = False         # explicit; recorded in the store attributes
                                      # (ignored, recorded false, by non-learned hoghof)
    seed: int = 0
    dilate_last: bool = False         # ResNets: res5 stride 1, dilation 2 (stride 16 -> 8)
    clip_frames: int | None = None    # None: the backbone's default (32 for the ResNets)
    clip_stride: int | None = None    # None: the backbone's default (2)
    clip_fps: float | None = 30.0     # the stride counts frames at this rate; 0/None: native
    time_offset: float | None = None  # video time = timestamp - offset (AVA 15-min cuts:
                                      # 900); None: the detections' own, else 0
    short_side: int = 256             # the default view's scale
    scales: list[int] = field(default_factory=list)  # extra test-time scales
    flip: bool = False                # also write flipped views
    pad_multiple: int | None = None   # each canvas side is padded up to a multiple of
                                      # this (1: unpadded); None: 1 for i3d and SlowFast
                                      # (the official input), else the output stride
    batch_size: int = 4               # clips per forward pass
    num_workers: int | None = None    # decoding workers; None: min(8, cores - 1)
    segment_keyframes: int = 64       # keyframes per decoding task
    piece_frames: int = 32            # frames per message from a worker
    device: str = "auto"              # auto | cpu | cuda[:i]
    amp: bool = False                 # cuda: float16 autocast
    dtype: str = "float16"            # float16 | int8 (per-(keyframe, channel) scale:
                                      # about half the bytes; pipeline/artifacts/features.py)
                                      # | float32 (exact maps, twice the bytes)
    temporal: str | int = "mean"      # mean: (C, H, W) maps, the mean over time; N: N time
                                      # bins, (C, N, H, W) maps (the s_only/t_only heads)


def view_name(scale: int, flip: bool) -> str:
    return f"s{scale}" + ("_flip" if flip else "")


# ---- clip sampling ----------------------------------------------------------------

def clip_times(t: float, info: VideoInfo, frames: int, stride: int,
               clip_fps: float | None = None) -> np.ndarray:
    """Sample times (s) of a clip centred on ``t``, shifted to stay inside the video.

    Frame ``frames // 2`` is at ``t``; samples are ``stride / clip_fps`` seconds apart
    (``clip_fps=None``: the video's own fps).  A window crossing the start or the end
    is shifted (not truncated), so a keyframe near the end takes the last frames; a
    video shorter than the window starts at its first frame and repeats its last one.
    """
    step = stride / (clip_fps or info.fps)
    s = t + (np.arange(frames) - frames // 2) * step
    first, last = float(info.times[0]), float(info.times[-1])
    if s[-1] - s[0] >= last - first:
        return s - s[0] + first
    return s + max(first - s[0], 0.0) + min(last - s[-1], 0.0)


def clip_indices(t: float, info: VideoInfo, frames: int, stride: int,
                 clip_fps: float | None = None) -> np.ndarray:
    """Frame indices of the clip around ``t`` (see :func:`clip_times`)."""
    return nearest_frames(info.times, clip_times(t, info, frames, stride, clip_fps))


def plan_clips(info: VideoInfo, times: np.ndarray, frames: int, stride: int,
               clip_fps: float | None) -> np.ndarray:
    """(K, T) frame indices of the clips of keyframes at video ``times`` (s)."""
    lo, hi = float(info.times[0]) - 1.0, info.duration + 1.0
    bad = [float(t) for t in times if not lo <= t <= hi]
    if bad:
        raise ArtifactError(info.path, f"keyframe at {bad[0]:g} s is outside the video "
                            f"(0-{info.duration:.1f} s); check the timestamps and "
                            "time_offset (AVA 15-minute cuts: 900)")
    if len(times) == 0:
        return np.zeros((0, frames), np.int64)
    return np.stack([clip_indices(float(t), info, frames, stride, clip_fps) for t in times])


# ---- pre-processing -----------------------------------------------------------------

def canvas_size(w: int, h: int, pad_multiple: int) -> tuple[int, int]:
    """(W, H) of the network input holding a ``w`` x ``h`` image: each side rounded up to a
    multiple of ``pad_multiple`` on its own (not a square)."""
    return (math.ceil(w / pad_multiple) * pad_multiple,
            math.ceil(h / pad_multiple) * pad_multiple)


def view_geometry(width: int, height: int, scale: int, pad_multiple: int
                  ) -> tuple[int, int, tuple[int, int]]:
    """(w, h) of the frame scaled to short side ``scale``, and the canvas (W, H)."""
    r = scale / min(width, height)
    w, h = max(1, round(width * r)), max(1, round(height * r))
    return w, h, canvas_size(w, h, pad_multiple)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, h, w) uint8, bilinear with antialiasing."""
    if tuple(frames.shape[-2:]) == (size[1], size[0]):
        return frames.contiguous()
    x = frames.contiguous(memory_format=torch.channels_last)
    x = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False,
                      antialias=True)
    return x.contiguous()


def normalise_clips(clips: torch.Tensor, mean: tuple, std: tuple, flip: bool,
                    canvas: tuple[int, int] | int) -> torch.Tensor:
    """(B, T, 3, h, w) uint8 -> (B, 3, T, H, W) float: normalised, optionally mirrored,
    zero-padded right and bottom to the canvas ``(W, H)`` (an int: a square; zero = the
    mean colour after normalising)."""
    cw, ch = (canvas, canvas) if isinstance(canvas, int) else canvas
    x = clips.float().div_(255)
    m = torch.tensor(mean, device=x.device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 1, 3, 1, 1)
    x = (x - m) / s
    if flip:
        x = x.flip(-1)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, cw - w, 0, ch - h))
    return x.permute(0, 2, 1, 3, 4).contiguous()


def preprocess(frames: np.ndarray, scale: int, flip: bool, pad_multiple: int,
               mean: tuple, std: tuple) -> tuple[torch.Tensor, tuple[int, int], tuple]:
    """One clip (T, H0, W0, 3) uint8 -> ((3, T, H, W) float, (W, H) canvas, valid box).

    The same steps as the stage (:func:`resize_frames`, :func:`normalise_clips`)."""
    h0, w0 = frames.shape[1:3]
    w, h, canvas = view_geometry(w0, h0, scale, pad_multiple)
    x = resize_frames(torch.from_numpy(frames).permute(0, 3, 1, 2), (w, h))
    x = normalise_clips(x[None], mean, std, flip, canvas)[0]
    return x, canvas, (0, 0, w, h)


def time_pool(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              bins: int | None) -> torch.Tensor:
    """Clips (B, 3, T, S, S) through ``net`` (-> (B, C, T', H', W')) to float32 maps:
    ``bins=None`` (``temporal: mean``) the mean over time (B, C, H', W'); else
    (B, C, bins, H', W'): the map average-pooled over time into ``bins`` bins when
    T' >= bins, else (a map with fewer time steps, e.g. hoghof's one) the mean map of each
    of ``bins`` consecutive sub-clips of the clip (frames split as ``torch.tensor_split``)."""
    if bins is None:
        return net(x).float().mean(dim=2)                                  # (B, C, H', W')
    fmap = net(x).float()                                                  # (B, C, T', H', W')
    if fmap.shape[2] >= bins:
        return F.adaptive_avg_pool3d(fmap, (bins, *fmap.shape[-2:]))       # (B, C, N, H', W')
    parts = torch.tensor_split(x, bins, dim=2)                             # N x (B, 3, T/N, ..)
    return torch.stack([net(p).float().mean(dim=2) for p in parts], dim=2)  # (B, C, N, H', W')


# ---- decoding workers -----------------------------------------------------------------

@dataclass(frozen=True)
class _Segment:
    video: str
    path: Path
    times: np.ndarray        # video times (s) of all keyframes of the video
    start: int               # this segment's keyframes: [start, stop)
    stop: int


@dataclass(frozen=True)
class _SegmentStart:
    """What the main process learns with a segment's first piece."""
    clips: torch.Tensor      # (K, T) frame indices of the segment's keyframes' clips
    size: tuple[int, int]    # (W, H) of the original frames
    fps: float
    num_clips: int           # keyframes of the whole video


@dataclass(frozen=True)
class _Piece:
    """A worker's message: decoded, resized frames of one segment of one video."""
    video: str
    start: int                          # the segment's first keyframe
    ids: torch.Tensor                   # (P,) frame indices
    refs: torch.Tensor                  # (P,) clips of the video that need each frame
    frames: dict[int, torch.Tensor]     # scale -> (P, 3, h, w) uint8
    first: _SegmentStart | None = None  # with the segment's first piece only

    def pin_memory(self) -> _Piece:
        """Pinned copies of the frames (the DataLoader's ``pin_memory`` calls this)."""
        return dataclasses.replace(self, frames={s: f.pin_memory()
                                                 for s, f in self.frames.items()})


@dataclass(frozen=True)
class _Failure:
    """A worker's message: the segment's video failed (one line naming the file)."""
    video: str
    start: int
    error: str


@dataclass
class _Plan:
    video: Video
    clips: np.ndarray        # (K, T) frame indices
    refs: np.ndarray         # clips needing each frame (indexed by frame)


class _SegmentFrames(IterableDataset):
    """Decodes and resizes the frames that each segment owns; runs in the workers."""

    def __init__(self, segments: list[_Segment], cfg: ExtractConfig, frames: int, stride: int,
                 scales: list[int]):
        self.segments, self.cfg, self.frames, self.stride = segments, cfg, frames, stride
        self.scales = scales
        self._plan: tuple[Path, _Plan] | None = None

    def __iter__(self) -> Iterator[_Piece | _Failure]:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for seg in self.segments[w::n]:
            try:
                yield from self._pieces(seg)
            except Exception as err:  # noqa: BLE001 - one bad video must not stop the run
                msg = str(err) if isinstance(err, ArtifactError) else \
                    f"{seg.path}: {err.__class__.__name__}: {str(err)[:200]}"
                yield _Failure(seg.video, seg.start, msg)

    def plan(self, seg: _Segment) -> _Plan:
        if self._plan is None or self._plan[0] != seg.path:
            self._plan = None
            video = Video(seg.path)
            clips = plan_clips(video.info, seg.times, self.frames, self.stride,
                               self.cfg.clip_fps)
            refs = np.zeros(video.num_frames, np.int64)
            for clip in clips:
                refs[np.unique(clip)] += 1
            self._plan = (seg.path, _Plan(video, clips, refs))
        return self._plan[1]

    def _pieces(self, seg: _Segment) -> Iterator[_Piece]:
        plan = self.plan(seg)
        video, clips = plan.video, plan.clips[seg.start:seg.stop]
        if video.seekable:   # a frame belongs to the first segment that needs it
            before = int(plan.clips[:seg.start].max()) if seg.start > 0 else -1
            owned = np.unique(clips)
            owned = owned[owned > before]
        else:                # no reliable seeking: the first segment decodes all in one pass
            owned = np.unique(plan.clips) if seg.start == 0 else np.zeros(0, np.int64)
        sizes = {s: view_geometry(video.width, video.height, s, self.cfg.pad_multiple)[:2]
                 for s in self.scales}
        first = _SegmentStart(torch.from_numpy(clips), (video.width, video.height),
                              float(video.fps), len(plan.clips))
        step = max(1, self.cfg.piece_frames)
        for p in range(0, max(len(owned), 1), step):
            ids = owned[p:p + step]
            resized: dict[int, list[torch.Tensor]] = {s: [] for s in self.scales}
            for q in range(0, len(ids), 8):          # bound full-resolution memory
                raw = torch.from_numpy(video.read(ids[q:q + 8])).permute(0, 3, 1, 2)
                for s in self.scales:
                    resized[s].append(resize_frames(raw, sizes[s]))
            frames = {s: torch.cat(v) if v else torch.zeros(0, 3, *sizes[s][::-1],
                                                            dtype=torch.uint8)
                      for s, v in resized.items()}
            yield _Piece(seg.video, seg.start, torch.from_numpy(ids),
                         torch.from_numpy(plan.refs[ids]), frames, first if p == 0 else None)


# ---- the main process -------------------------------------------------------------------

class _VideoState:
    """Frames received so far, clips known/ready/done, and the open arrays of a video.

    Clips run in fixed groups of ``batch`` consecutive keyframes, whatever order the
    frames arrive in, so the numbers never depend on workers or segments.
    """

    def __init__(self, video: str, timestamps: np.ndarray, num_clips: int, batch: int):
        self.video, self.timestamps, self.batch = video, timestamps, batch
        self.clips: dict[int, np.ndarray] = {}     # keyframe index -> frame indices
        self.waiting: list[int] = []               # known clips whose frames are missing
        self.ready: set[int] = set()
        self.groups = list(range(math.ceil(num_clips / batch)))   # groups not yet run
        self.done = 0
        self.num_clips = num_clips
        self.frames: dict[int, dict[int, torch.Tensor]] = {}
        self.refs: dict[int, int] = {}
        self.arrays: dict[str, zarr.Array] = {}
        self.writes: list[Future] = []
        self.size = (0, 0)                         # (W, H) of the original frames

    def add(self, piece: _Piece) -> None:
        if piece.first is not None:
            for j, clip in enumerate(piece.first.clips.numpy()):
                self.clips[piece.start + j] = clip
                self.waiting.append(piece.start + j)
        ids = piece.ids.tolist()
        for j, (fid, ref) in enumerate(zip(ids, piece.refs.tolist(), strict=True)):
            self.frames[fid] = {s: f[j] for s, f in piece.frames.items()}
            self.refs[fid] = ref
        still = []
        for k in self.waiting:
            if all(f in self.frames for f in self.clips[k]):
                self.ready.add(k)
            else:
                still.append(k)
        self.waiting = still

    def _members(self, g: int) -> list[int]:
        return list(range(g * self.batch, min((g + 1) * self.batch, self.num_clips)))

    def next_group(self) -> list[int] | None:
        """Keyframe indices of a group whose clips are all ready, if any."""
        for g in self.groups:
            ks = self._members(g)
            if all(k in self.ready for k in ks):
                self.groups.remove(g)
                return ks
        return None

    def take(self, ks: list[int]) -> dict[int, torch.Tensor]:
        """The clips ``ks`` as (B, T, 3, h, w) uint8 per scale; frees unneeded frames."""
        scales = list(self.frames[int(self.clips[ks[0]][0])])
        out = {s: torch.stack([torch.stack([self.frames[f][s] for f in self.clips[k]])
                               for k in ks]) for s in scales}
        for k in ks:
            for f in np.unique(self.clips[k]).tolist():
                self.refs[f] -= 1
                if self.refs[f] <= 0:
                    del self.frames[f], self.refs[f]
            del self.clips[k]
            self.ready.discard(k)
        self.done += len(ks)
        return out


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set to ``enabled`` (if true) inside, restored
    after: a run must not change the process's settings for later code."""
    before = torch.backends.cudnn.benchmark
    if enabled:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _workers(n: int | None) -> int:
    return max(0, min(8, (os.cpu_count() or 2) - 1)) if n is None else n


def open_output(url: str, attempts: int = 5) -> FeatureStore:
    """Open or create the store; tolerate another process creating it at the same time."""
    if url.startswith("file://"):     # fsspec's local files would need every directory made
        url = url.removeprefix("file://")
    for attempt in range(attempts):
        try:
            return FeatureStore(url, mode="a")
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError,
                FileExistsError) as err:
            if attempt == attempts - 1:
                what = "a file, not a store" if Path(url).is_file() else \
                    f"{err.__class__.__name__}"
                raise ArtifactError(url, f"cannot open or create the feature store ({what})"
                                    ) from None
            time.sleep(0.05 * (attempt + 1))
        except OSError as err:             # a file on the path, no permission, ...
            raise ArtifactError(url, f"cannot open or create the feature store "
                                f"({err.__class__.__name__}: {err.strerror or err})") from None
    raise AssertionError("unreachable")


def make_spec(cfg: ExtractConfig, identity: str) -> tuple[FeatureSpec, list[tuple[int, bool]]]:
    bb = get_backbone(cfg.backbone)
    views = [(s, f) for s in dict.fromkeys([cfg.short_side, *cfg.scales])
             for f in ([False, True] if cfg.flip else [False])]
    extra = {"clip_fps": cfg.clip_fps, "dilate_last": cfg.dilate_last,
             "pad_multiple": cfg.pad_multiple, "canvas": CANVAS,
             "time_offset": cfg.time_offset, "amp": cfg.amp}
    if cfg.dtype != "float16":     # a float16 store records none: older stores still match
        extra["dtype"] = cfg.dtype
    if (bins := parse_temporal(cfg.temporal)) is not None:   # mean records none, likewise
        extra["temporal"] = bins
    if cfg.preset is not None:        # recorded only then: stores made without are unchanged
        extra.update(preset=cfg.preset, norm=[list(bb.mean), list(bb.std)])
    random_init = cfg.random_init and bb.learned     # a non-learned backbone ignores it
    spec = FeatureSpec(cfg.backbone, identity, random_init,
                       cfg.clip_frames or bb.clip_frames, cfg.clip_stride or bb.clip_stride,
                       cfg.short_side, bb.channels, tuple(view_name(s, f) for s, f in views),
                       extra)
    return spec, views


def default_pad_multiple(cfg: ExtractConfig) -> int:
    """1 (no padding) for i3d and SlowFast, else the backbone's output stride: each canvas
    side is padded to the next whole cell (:func:`pipeline.backbones.default_pad_multiple`)."""
    return backbone_pad_multiple(get_backbone(cfg.backbone), cfg.dilate_last)


def _check(cfg: ExtractConfig, spec: FeatureSpec, out: str) -> None:
    bb = get_backbone(cfg.backbone)
    stride = feature_stride(bb, cfg.dilate_last)
    if cfg.pad_multiple != 1 and cfg.pad_multiple % stride:
        raise ArtifactError(out, f"pad_multiple {cfg.pad_multiple} must be 1 (no padding) or "
                            f"a multiple of {cfg.backbone}'s output stride {stride} (e.g. "
                            f"{math.lcm(32, stride)} or {stride})")
    if spec.clip_frames < bb.min_frames or spec.clip_stride < 1:
        raise ArtifactError(out, f"{cfg.backbone} needs clip_frames >= {bb.min_frames} and "
                            "clip_stride >= 1")
    if cfg.dtype not in DTYPES:
        raise ArtifactError(out, f"extract.dtype '{cfg.dtype}' is not one of "
                            f"{', '.join(DTYPES)}")
    bins = parse_temporal(cfg.temporal)
    if bins is not None and bins * bb.min_frames > spec.clip_frames:
        raise ArtifactError(out, f"extract.temporal {bins} needs clip_frames >= {bins} x "
                            f"{bb.min_frames} ({cfg.backbone}'s shortest clip), got "
                            f"{spec.clip_frames}")
    if min([cfg.short_side, *cfg.scales]) < 8 or cfg.batch_size < 1:
        raise ArtifactError(out, "scales must be >= 8 and batch_size >= 1")


class NonFinite(Exception):
    """A forward pass gave a non-finite feature (the message names video and keyframe)."""


_CONCURRENT = (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError)


def _another_writer(out: str, video: str, err: Exception) -> ArtifactError:
    return ArtifactError(out, f"video '{video}' was written by another process meanwhile "
                         f"({err.__class__.__name__}): two unsharded extract runs on one "
                         "store? run them one after the other, or use --shard i/N")


def run(cfg: ExtractConfig, videos_dir: str | os.PathLike, detections: str | os.PathLike,
        out: str, shard: tuple[int, int] = (0, 1), allow_empty: bool = True,
        recursive: bool = False) -> list[str]:
    """Extract features for every video of the detections (this shard); returns failures.

    Videos already complete with the same spec are skipped; a failing video is reported
    (one line naming the file) and the others are still processed.  Groups of videos
    not in the detections are removed.  With ``allow_empty`` false (the CLI's default),
    detections without a row, or a videos folder without a video, are an error.
    """
    dets, meta = read_detections(detections, allow_empty=allow_empty)
    if cfg.time_offset is None:
        cfg = ExtractConfig(**{**cfg.__dict__, "time_offset": float(meta.get("time_offset", 0))})
    if cfg.pad_multiple is None:
        cfg = ExtractConfig(**{**cfg.__dict__, "pad_multiple": default_pad_multiple(cfg)})
    paths = list_videos(videos_dir, recursive)
    inputs = set(dets["video_id"])
    if inputs and not paths and not allow_empty:
        raise no_videos_error(videos_dir, VIDEO_EXTS)
    wanted = shard_items(inputs, shard)
    parse_temporal(cfg.temporal)          # a bad value fails before the backbone is built
    net, bb, identity = build_backbone(cfg.backbone, cfg.weights, cfg.random_init, cfg.seed,
                                       cfg.dilate_last)
    spec, views = make_spec(cfg, identity)
    _check(cfg, spec, out)
    if spec.random_init:
        tqdm.write(f"warning: {cfg.backbone} is randomly initialised (seed {cfg.seed}); "
                   "the store records it", file=sys.stderr)
    device = _device(cfg.device)
    net = net.to(device)
    store = open_output(out)
    remove_digest(out)                    # written again below once the store is complete
    stale = stale_items(store.videos(complete_only=False), inputs, shard)
    for video in stale:
        store.remove_video(video)
    if stale:
        tqdm.write(f"extract: removed {len(stale)} groups of videos not in {detections}: "
                   f"{', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''}",
                   file=sys.stderr)
    failures: list[str] = []
    todo = []
    all_stamps = {v: np.sort(g["timestamp"].unique()).astype(np.int32)
                  for v, g in dets[dets["video_id"].isin(wanted)].groupby("video_id")}
    reused = 0
    for v in wanted:
        if store.is_current(v) and store.spec(v) == spec and _same_source(
                store, v, paths.get(v), all_stamps[v]):
            reused += 1
            continue
        if v not in paths:
            failures.append(str(ArtifactError(Path(videos_dir) / f"{v}.*", "video file not "
                                              "found (it has detections)")))
            continue
        todo.append(v)
    for msg in failures:
        tqdm.write(f"error: {msg}", file=sys.stderr)
    stamps = {v: all_stamps[v] for v in todo}
    segments = [_Segment(v, paths[v], stamps[v].astype(np.float64) - cfg.time_offset, a,
                         min(a + cfg.segment_keyframes, len(stamps[v])))
                for v in todo for a in range(0, len(stamps[v]), cfg.segment_keyframes)]
    scales = list(dict.fromkeys(s for s, _ in views))
    source = _SegmentFrames(segments, cfg, spec.clip_frames, spec.clip_stride, scales)
    nw = min(_workers(cfg.num_workers), len(segments))
    loader = DataLoader(source, batch_size=None, num_workers=nw,
                        prefetch_factor=2 if nw else None, pin_memory=device.type == "cuda",
                        worker_init_fn=worker_init() if nw else None)
    ctx = _Context(store, net, bb, spec, views, cfg, device)
    states: dict[str, _VideoState] = {}
    failed: set[str] = set()
    bar = progress(total=sum(len(stamps[v]) for v in todo), desc="extract", unit="clip",
                   dynamic_ncols=True)
    writer = ThreadPoolExecutor(max_workers=1)
    with cudnn_benchmark(device.type == "cuda"):
        try:
            for piece in loader:
                video = piece.video
                if video in failed:
                    continue
                if isinstance(piece, _Failure):
                    failed.add(video)
                    failures.append(piece.error)
                    tqdm.write(f"error: {piece.error}", file=sys.stderr)
                    st = states.pop(video, None)
                    bar.update(len(stamps[video]) - (st.done if st else 0))
                    continue
                st = states.get(video)
                if st is None:     # a video's first piece is the first of one of its segments
                    first = piece.first
                    assert first is not None, "internal error: a segment's head piece is missing"
                    st = states[video] = _VideoState(video, stamps[video], first.num_clips,
                                                     cfg.batch_size)
                    w, h = first.size
                    try:
                        store.begin_video(video, stamps[video], {
                            **spec.to_dict(), "frame_size": [w, h], "fps": first.fps,
                            "source": fingerprint(paths[video])})
                    except _CONCURRENT as err:
                        raise _another_writer(out, video, err) from None
                    st.size = (w, h)
                st.add(piece)
                bar.set_postfix_str(video, refresh=False)
                try:
                    while (ks := st.next_group()) is not None:
                        bar.update(ctx.forward(st, ks, writer))
                except NonFinite as err:
                    for fut in st.writes:
                        fut.result()
                    del store.root[video], states[video]
                    failed.add(video)
                    failures.append(f"{paths[video]}: {err}")
                    tqdm.write(f"error: {failures[-1]}", file=sys.stderr)
                    bar.update(len(stamps[video]) - st.done)
                    continue
                except _CONCURRENT as err:
                    raise _another_writer(out, video, err) from None
                if st.done == st.num_clips:
                    for fut in st.writes:
                        fut.result()
                    store.finish_video(video)
                    del states[video]
            for video in states:       # not reached unless a worker lost a piece
                failures.append(f"{video}: incomplete (internal error: missing frames)")
        finally:
            writer.shutdown(wait=True)
            bar.close()
    tqdm.write(summary_line(store, wanted, reused, failures, out))
    if complete_store(store, inputs, spec):   # (a shard: only once the others are done too)
        write_digest(out)
    return failures


def complete_store(store: FeatureStore, videos: Iterable[str], spec: FeatureSpec) -> bool:
    """Whether ``store`` holds exactly ``videos``, each complete and current with ``spec``:
    a full build, which gets its digest (:mod:`pipeline.artifacts.digest`)."""
    videos = set(videos)
    return set(store.videos(complete_only=False)) == videos and all(
        store.is_current(v) and store.spec(v) == spec for v in videos)


def summary_line(store: FeatureStore, videos: Iterable[str], reused: int, failures: list[str],
            out: str) -> str:
    """The end line: ``extract: 300 videos (12 reused), 2,691 keyframes, 7.3 MB, 0 failed
    (data/features.zarr)``: the complete ones of ``videos``, their keyframes and bytes
    as stored."""
    done = [v for v in sorted(videos) if store.is_complete(v)]
    keyframes = sum(len(store.timestamps(v)) for v in done)
    nbytes = 0
    for v in done:
        nbytes += sum(int(a.nbytes_stored()) for _, a in store.group(v).members(max_depth=None)
                      if isinstance(a, zarr.Array))
    return (f"extract: {len(done):,} videos ({reused:,} reused), {keyframes:,} keyframes, "
            f"{nbytes / 1e6:,.1f} MB, {len(failures)} failed ({out})")


def _same_source(store: FeatureStore, video: str, path: Path | None,
                 stamps: np.ndarray) -> bool:
    """A complete video is reused only for the same keyframes of the same file (a rerun
    after the videos or detections changed must not keep stale features)."""
    if not np.array_equal(store.timestamps(video), stamps):
        return False
    recorded = store.attrs(video).get("source")
    return path is None or recorded == fingerprint(path)


class _Context:
    """Everything a forward pass needs; writes go to a background thread."""

    def __init__(self, store, net, bb, spec, views, cfg, device):
        self.store, self.net, self.bb, self.spec, self.views = store, net, bb, spec, views
        self.cfg, self.device = cfg, device
        self.mean, self.std = bb.mean, bb.std
        self.bins = parse_temporal(cfg.temporal)
        self.stride = feature_stride(bb, cfg.dilate_last)     # the map's cell, in px

    def _net(self, x: torch.Tensor, image: tuple[int, int], amp: bool) -> torch.Tensor:
        """(B, 3, T, S, S) -> the backbone's (B, C, T', H', W') map."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=amp):
            return self.net(x, image=image) if self.bb.sees_image else self.net(x)

    @torch.inference_mode()
    def forward(self, st: _VideoState, ks: list[int], writer: ThreadPoolExecutor) -> int:
        clips = st.take(ks)
        w0, h0 = st.size
        amp = self.cfg.amp and self.device.type == "cuda"
        for scale, flip in self.views:
            w, h, canvas = view_geometry(w0, h0, scale, self.cfg.pad_multiple)
            x = clips[scale].to(self.device, non_blocking=True)
            x = normalise_clips(x, self.mean, self.std, flip, canvas)   # (B, 3, T, H, W)
            fmap = time_pool(functools.partial(self._net, image=(h, w), amp=amp), x, self.bins)
            fmap = (fmap if self.cfg.dtype == "float32" else fmap.half()).cpu().numpy()
            name = view_name(scale, flip)
            finite = np.isfinite(fmap).reshape(len(ks), -1).all(axis=1)   # (B,)
            if not finite.all():
                k = ks[int(np.flatnonzero(~finite)[0])]
                raise NonFinite(f"non-finite feature (nan or inf, float16 range included) "
                                f"at keyframe t={int(st.timestamps[k])} (view {name}); the "
                                "video is not written")
            if name not in st.arrays:
                # the map covers ceil(canvas / stride) whole cells (= canvas / stride when
                # the canvas is padded to the stride; pad_multiple 1: the last cells stand
                # out past the image, as on the official unpadded input)
                stride = self.stride
                cells = (math.ceil(canvas[0] / stride), math.ceil(canvas[1] / stride))
                size = (cells[0] * stride, cells[1] * stride)        # (W, H) the cells cover
                if (fmap.shape[-1], fmap.shape[-2]) != cells:
                    raise ArtifactError(self.spec.backbone, f"a {canvas[0]}x{canvas[1]} "
                                        f"input gave a {fmap.shape[-1]}x{fmap.shape[-2]} map, "
                                        f"not {cells[0]}x{cells[1]} cells of stride {stride}"
                                        + ("; pad the input (--pad-multiple "
                                           f"{stride})" if self.cfg.pad_multiple == 1 else ""))
                vs = ViewSpec(name, scale, flip, size, (0, 0, w, h), size[0] / cells[0])
                st.arrays[name] = self.store.create_view(st.video, vs,
                                                         (st.num_clips, *fmap.shape[1:]),
                                                         self.cfg.dtype)
            assert ks == list(range(ks[0], ks[0] + len(ks)))   # consecutive keyframes
            st.writes.append(writer.submit(self.store.write_rows, st.video, st.arrays[name],
                                           ks[0], fmap))
        return len(ks)
