"""Input folders: what a folder that should hold video files holds instead.

Used by the stages that read a ``--videos`` folder to say, in one line, why it gave them
no video (an empty folder, the videos in subfolders, files of other kinds).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from . import ArtifactError


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
        return ArtifactError(d, f"{problem}; its subfolders hold videos: {_few(holding)} "
                             "(pass a subfolder as --videos; subfolders are not searched)")
    found = []
    if others:
        found.append(f"{len(others)} other files: {_few(others)}")
    if subdirs:
        found.append(f"{len(subdirs)} subfolders without videos: "
                     f"{_few([p.name + '/' for p in subdirs])}")
    return ArtifactError(d, f"{problem}; found {'; '.join(found) if found else 'nothing'}")
