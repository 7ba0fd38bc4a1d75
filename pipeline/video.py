"""Video I/O shared by the stages: decode with decord, encode with PyAV."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import ArtifactError
from .artifacts.atomic import atomic_path

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def list_videos(directory: str | os.PathLike) -> dict[str, Path]:
    """video_id (file stem) -> path, for every video file in ``directory``, sorted."""
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(d, "videos directory not found")
    return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in VIDEO_EXTS}


def open_video(path: str | os.PathLike, threads: int = 1):
    """A decord VideoReader, or an ArtifactError naming the file."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "video file not found")
    if path.stat().st_size == 0:
        raise ArtifactError(path, "video file is empty (0 bytes)")
    try:
        vr = decord.VideoReader(str(path), num_threads=threads)
    except Exception as err:  # decord raises DECORDError / RuntimeError
        raise ArtifactError(path, f"cannot decode video ({str(err).splitlines()[0][:120]})"
                            ) from None
    if len(vr) == 0:
        raise ArtifactError(path, "video has no frames")
    return vr


def video_info(path: str | os.PathLike) -> VideoInfo:
    vr = open_video(path)
    h, w = vr[0].shape[:2]
    return VideoInfo(Path(path), len(vr), float(vr.get_avg_fps()), w, h)


def read_frames(vr, indices: np.ndarray) -> np.ndarray:
    """(T,) frame indices -> (T, H, W, 3) uint8 RGB.  Each index is decoded once."""
    indices = np.asarray(indices, dtype=np.int64)
    uniq, inverse = np.unique(indices, return_inverse=True)
    frames = vr.get_batch(uniq.tolist()).asnumpy()
    return frames[inverse]


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float,
                crf: int = 23) -> None:
    """Encode RGB uint8 frames (H, W, 3) to an h264 mp4, atomically, without audio."""
    import av

    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            stream = None
            for frame in frames:
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = out.add_stream("libx264", rate=round(fps))
                    stream.width, stream.height = w - w % 2, h - h % 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                vf = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(frame[: stream.height, : stream.width]), format="rgb24")
                for packet in stream.encode(vf):
                    out.mux(packet)
            if stream is not None:
                for packet in stream.encode():
                    out.mux(packet)
