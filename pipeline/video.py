"""Video I/O shared by the stages: decode with decord, encode with PyAV.

Time, not frame counts, is the ground truth: a keyframe at second ``t`` is the frame
whose start time is nearest to ``t``.  Frame start times come from decord when they are
plausible; decord reports garbage for some containers (h264 inside .avi gives
``-3.7e17`` for every frame), and then ``i / fps`` is used instead.  decord's frame
count can also be one too high; :meth:`Video.read` drops a last frame that cannot be
decoded instead of failing.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError
from .artifacts.atomic import atomic_path

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """What the stages need to know about a video before decoding it."""

    path: Path | None
    num_frames: int
    fps: float
    width: int
    height: int
    times: np.ndarray = field(default=None)  # (num_frames,) start time of each frame (s)

    def __post_init__(self) -> None:
        if self.times is None:
            object.__setattr__(self, "times", np.arange(self.num_frames) / self.fps)

    @property
    def duration(self) -> float:
        return float(self.times[-1]) + 1.0 / self.fps if self.num_frames else 0.0

    def index_at(self, t: float | np.ndarray) -> np.ndarray:
        """Index of the frame whose start time is nearest to ``t`` (s), for each ``t``."""
        return nearest_frames(self.times, t)


def nearest_frames(times: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Indices into the sorted ``times`` of the entries nearest to ``t`` (ties: earlier)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    hi = np.clip(np.searchsorted(times, t, side="left"), 1, max(len(times) - 1, 1))
    lo = hi - 1
    if len(times) == 1:
        return np.zeros(len(t), dtype=np.int64)
    pick_hi = np.abs(times[hi] - t) < np.abs(t - times[lo]) - 1e-9
    return np.where(pick_hi, hi, lo).astype(np.int64)


def valid_times(raw: np.ndarray | None, n: int, fps: float) -> np.ndarray | None:
    """decord's (n, 2) frame [start, end] times if plausible, else ``None``.

    Plausible: finite, strictly increasing starts beginning near 0 (within 10 s), and a
    median frame interval within a factor 4 of ``1 / fps``.
    """
    if raw is None or len(raw) != n or n == 0:
        return None
    starts = np.asarray(raw, dtype=np.float64).reshape(n, -1)[:, 0]
    if not np.isfinite(starts).all() or not -1.0 <= starts[0] <= 10.0:
        return None
    if n > 1:
        steps = np.diff(starts)
        if (steps <= 0).any():
            return None
        med = float(np.median(steps))
        if not 0.25 / fps <= med <= 4.0 / fps:
            return None
    return starts


class Video:
    """An open video: a decord reader plus validated frame times.

    ``reader`` may be any object with decord's ``VideoReader`` interface (tests).
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1, reader=None):
        self.path = Path(path)
        self.vr = reader if reader is not None else _open_reader(self.path, threads)
        n = len(self.vr)
        if n == 0:
            raise ArtifactError(self.path, "video has no frames")
        try:
            fps = float(self.vr.get_avg_fps())
        except Exception:  # noqa: BLE001 - decord raises its own error types
            fps = float("nan")
        try:
            raw = np.asarray(self.vr.get_frame_timestamp(np.arange(n).tolist()))
        except Exception:  # noqa: BLE001
            raw = None
        if not np.isfinite(fps) or fps <= 0:
            starts = valid_times(raw, n, 1.0)   # permissive: derive fps from the times
            if starts is None or n < 2:
                raise ArtifactError(self.path, "cannot determine the frame rate")
            fps = 1.0 / float(np.median(np.diff(starts)))
        self.fps = fps
        starts = valid_times(raw, n, fps)
        self.timestamps_from_container = starts is not None
        # without usable timestamps decord cannot seek reliably: decode sequentially
        self.seekable = self.timestamps_from_container
        self._cursor: int | None = None             # next frame of sequential decoding
        self.times = starts if starts is not None else np.arange(n) / fps
        self._first = self._decode([0])[0]          # reused by read(): decoded once
        self.height, self.width = self._first.shape[:2]

    @property
    def num_frames(self) -> int:
        return len(self.times)

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(self.path, self.num_frames, self.fps, self.width, self.height,
                         self.times)

    def index_at(self, t: float | np.ndarray) -> np.ndarray:
        return nearest_frames(self.times, t)

    def _decode(self, indices: list[int]) -> np.ndarray:
        out = self.vr.get_batch(indices)
        return out.asnumpy() if hasattr(out, "asnumpy") else np.asarray(out)

    def _decode_sequential(self, indices: list[int]) -> np.ndarray:
        """Sorted ``indices`` by decoding forward, restarting from frame 0 if needed."""
        out = []
        for target in indices:
            if self._cursor is None or target < self._cursor:
                self.vr.seek(0)
                self._cursor = 0
            while self._cursor <= target:
                frame = self.vr.next()
                self._cursor += 1
            out.append(frame.asnumpy() if hasattr(frame, "asnumpy") else np.asarray(frame))
        return np.stack(out)

    def read(self, indices: Iterable[int], max_batch: int = 16) -> np.ndarray:
        """Frames ``indices`` as (n, H, W, 3) uint8 RGB; each distinct index decoded once.

        Indices are decoded in increasing order, ``max_batch`` at a time (bounded memory
        for large frames).  If the last frame(s) of the video cannot be decoded (decord
        over-counts some files by one), they are dropped and the new last frame is used.
        """
        indices = np.asarray(list(indices), dtype=np.int64)
        if len(indices) == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        if indices.min() < 0 or indices.max() >= len(self.vr):
            raise ArtifactError(self.path, f"frame index out of range 0..{len(self.vr) - 1}")
        uniq, inverse = np.unique(indices, return_inverse=True)
        parts = []
        for s in range(0, len(uniq), max_batch):
            parts.append(self._read_sorted(uniq[s:s + max_batch]))
        return np.concatenate(parts)[inverse]

    def _read_sorted(self, uniq: np.ndarray) -> np.ndarray:
        if uniq[0] == 0 and self._first is not None:
            rest = self._read_sorted(uniq[1:]) if len(uniq) > 1 else \
                np.zeros((0, *self._first.shape), np.uint8)
            return np.concatenate([self._first[None], rest])
        while True:
            want = np.minimum(uniq, self.num_frames - 1)
            try:
                frames = self._decode(np.unique(want).tolist()) if self.seekable else \
                    self._decode_sequential(np.unique(want).tolist())
            except Exception as err:  # noqa: BLE001 - decord's DECORDError and friends
                # decord can count one frame too many: drop an undecodable last frame
                if want.max() == self.num_frames - 1 and self.num_frames > 1 \
                        and len(self.vr) - self.num_frames < 2:
                    self.times = self.times[:-1]
                    continue
                msg = str(err).splitlines()[0][:160] if str(err) else err.__class__.__name__
                raise ArtifactError(self.path, f"cannot decode frames {int(uniq[0])}.."
                                               f"{int(uniq[-1])} ({msg})") from None
            _, pos = np.unique(want, return_inverse=True)
            return frames[pos]


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: decord's C++ layer prints its own "ERROR opening" line
    for a bad file whatever its log level, and the error is re-raised as one line anyway."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_reader(path: Path, threads: int):
    import decord

    decord.logging.set_level(decord.logging.QUIET)   # failures become one-line errors
    if path.is_dir():
        raise ArtifactError(path, "a directory, not a video file")
    if not path.is_file():
        raise ArtifactError(path, "video file not found")
    if path.stat().st_size == 0:
        raise ArtifactError(path, "video file is empty (0 bytes)")
    try:
        with _quiet_stderr():
            return decord.VideoReader(str(path), num_threads=threads)
    except Exception as err:  # noqa: BLE001 - decord raises DECORDError / RuntimeError
        first = (str(err).splitlines() or [err.__class__.__name__])[0]
        first = re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", first)[:160]  # decord's prefix
        raise ArtifactError(path, f"cannot decode video ({first})") from None


def list_videos(directory: str | os.PathLike, recursive: bool = False) -> dict[str, Path]:
    """video_id (file stem) -> path, for every video file in ``directory``, sorted.

    ``recursive``: also the videos of its subfolders (``videos/train/``, ``videos/val/``),
    still keyed by the file stem; two files with one stem are an error naming both.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(d, "videos directory not found")
    files = sorted(d.rglob("*")) if recursive else sorted(d.iterdir())
    out: dict[str, Path] = {}
    for p in files:
        if p.suffix.lower() not in VIDEO_EXTS:
            continue
        if p.stem in out:
            raise ArtifactError(d, f"two videos have the id '{p.stem}': "
                                f"{out[p.stem].relative_to(d)} and {p.relative_to(d)} "
                                "(with --recursive the id is the file stem: rename one)")
        out[p.stem] = p
    return dict(sorted(out.items()))


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)})" if len(names) > n else "")


def no_videos_error(directory: str | os.PathLike, exts: Iterable[str]) -> ArtifactError:
    """The error for a videos folder without a video file: it says what was found."""
    d = Path(directory)
    exts = tuple(e.lower() for e in exts)
    try:
        entries = sorted(d.iterdir())
    except OSError as err:
        return ArtifactError(d, f"cannot list the videos folder ({err.__class__.__name__})")
    subdirs = [p for p in entries if p.is_dir()]
    nested = {p.name: sum(1 for q in p.rglob("*") if q.suffix.lower() in exts) for p in subdirs}
    holding = [f"{name}/ ({n})" for name, n in nested.items() if n]
    others = [p.name for p in entries if p.is_file()]
    problem = f"no video file ({', '.join(exts)}) in this folder"
    if holding:
        return ArtifactError(d, f"{problem}; its subfolders hold videos: {_few(holding)}: "
                             "use --recursive (the id is the file stem), or pass a "
                             "subfolder as --videos")
    found = []
    if others:
        found.append(f"{len(others)} other files: {_few(others)}")
    if subdirs:
        found.append(f"{len(subdirs)} subfolders without videos: "
                     f"{_few([p.name + '/' for p in subdirs])}")
    return ArtifactError(d, f"{problem}; found {'; '.join(found) if found else 'nothing'}")


def fingerprint(path: str | os.PathLike) -> dict:
    """Cheap identity of a video file: its size and a hash of its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(size - (1 << 20))
            h.update(fh.read(1 << 20))
    return {"name": path.name, "size": size, "sha256_head_tail": h.hexdigest()[:32]}


def open_video(path: str | os.PathLike, threads: int = 1) -> Video:
    """An open :class:`Video`, or an ArtifactError naming the file."""
    return Video(path, threads)


def video_info(path: str | os.PathLike) -> VideoInfo:
    return open_video(path).info


def read_frames(video: Video, indices: np.ndarray) -> np.ndarray:
    """(T,) frame indices -> (T, H, W, 3) uint8 RGB.  Each index is decoded once."""
    return video.read(indices)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "image file not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ArtifactError(path, "cannot read image")
    return np.ascontiguousarray(img[:, :, ::-1])


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float,
                crf: int = 23, lossless: bool = False) -> None:
    """Encode RGB uint8 frames (H, W, 3) to an h264 video, atomically, without audio.

    The container follows the suffix of ``path`` (mp4 unless it is .avi/.mkv/.mov).
    ``lossless`` (x264 at qp 0, about 3x the bytes of crf 23) makes the decoded frames a
    function of the input alone: with lossy settings, x264 (one thread) encoded the same
    frames differently in 1 to 4 of 8 videos over 5 runs, pixels differing by up to 5.
    """
    import av

    path = Path(path)
    fmt = {".avi": "avi", ".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower(), "mp4")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as out:
            stream = None
            for frame in frames:
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = out.add_stream("libx264", rate=round(fps))
                    stream.width, stream.height = w - w % 2, h - h % 2
                    stream.pix_fmt = "yuv420p"
                    quality = {"qp": "0"} if lossless else {"crf": str(crf)}
                    stream.options = {**quality, "preset": "veryfast", "threads": "1"}
                vf = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(frame[: stream.height, : stream.width]), format="rgb24")
                for packet in stream.encode(vf):
                    out.mux(packet)
            if stream is not None:
                for packet in stream.encode():
                    out.mux(packet)
