"""Store digests: one small file beside a finished Zarr store, standing for its content.

``data/features.zarr`` -> ``data/features.digest`` (:func:`digest_path`: the store's name
without ``.zarr``, plus ``.digest``).  It is a JSON object (keys sorted, one trailing
newline)::

    {"algorithm": "sha256", "bytes": 7302118, "digest": "<64 hex>", "files": 1496,
     "kind": "store-digest", "version": 1}

``digest`` is the SHA-256 over the store's files in the order of their relative POSIX
paths, each fed as ``path``, a NUL byte, its size (8 bytes, little-endian) and its bytes;
``files`` and ``bytes`` count them.  Nothing else goes in (no time, no absolute path), so a
byte-identical store gives a byte-identical digest file, and a file added, removed,
renamed or changed by one byte gives another.

Why: DVC walks and hashes a directory dependency once per stage that names it.  The
stores' producers (``extract``, ``bank``) name the store as an output and the digest
beside it; every stage that reads a store depends on its digest, one small file, so a
no-op ``dvc status`` walks each store once (README, "The DVC DAG").

Written by the producer at the end of a run, and only when the whole store is complete
(every input present, complete and current, nothing else; a ``--shard i/N`` run writes it
when its end finds the other shards done too), atomically (temp file + rename).  A run
that writes to the store removes the digest first, so an interrupted run leaves none
rather than a stale one.  Local stores only (a path or ``file://``): another fsspec URL
gets no digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import ArtifactError
from .atomic import write_text_atomic

KIND = "store-digest"
VERSION = 1
SUFFIX = ".digest"
ALGORITHM = "sha256"
_BLOCK = 1 << 20


def local_path(store: str | os.PathLike) -> Path | None:
    """The store's local path, or None for a remote fsspec URL (s3://, memory://...)."""
    text = os.fspath(store)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    return None if "://" in text else Path(text)


def digest_path(store: str | os.PathLike) -> Path:
    """``data/features.zarr`` -> ``data/features.digest`` (``data/x`` -> ``data/x.digest``)."""
    path = local_path(store)
    if path is None:
        raise ArtifactError(store, "a digest is written beside a local store only")
    return path.with_name(path.name.removesuffix(".zarr") + SUFFIX)


def store_digest(store: str | os.PathLike) -> dict:
    """The digest record of the store folder ``store`` (reads every file once)."""
    root = Path(store)
    if not root.is_dir():
        raise ArtifactError(root, "no store folder here to digest")
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    total = 0
    for rel, path in files:
        size = path.stat().st_size
        h.update(rel.encode() + b"\0" + size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            while block := f.read(_BLOCK):
                h.update(block)
        total += size
    return {"algorithm": ALGORITHM, "bytes": total, "digest": h.hexdigest(),
            "files": len(files), "kind": KIND, "version": VERSION}


def dumps(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def write_digest(store: str | os.PathLike) -> Path | None:
    """Write (atomically) the digest beside the local store ``store``; returns its path,
    or None for a remote store."""
    path = local_path(store)
    if path is None:
        return None
    out = digest_path(path)
    write_text_atomic(out, dumps(store_digest(path)))
    return out


def remove_digest(store: str | os.PathLike) -> None:
    """Remove the digest beside ``store`` (before a run writes to the store)."""
    path = local_path(store)
    if path is not None:
        digest_path(path).unlink(missing_ok=True)


def read_digest(path: str | os.PathLike) -> dict:
    """Read and check a digest file (one-line ArtifactError on anything else)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(path, "no digest file (the store's producer writes it when the "
                                  "store is complete)") from None
    except (OSError, ValueError) as err:
        raise ArtifactError(path, f"not a store digest ({err.__class__.__name__})") from None
    if not isinstance(record, dict) or record.get("kind") != KIND \
            or record.get("version") != VERSION:
        raise ArtifactError(path, f"not a {KIND} version {VERSION} file")
    return record


def matches(store: str | os.PathLike) -> bool:
    """Whether the digest beside the local store ``store`` is that of its current bytes."""
    path = digest_path(store)
    return path.is_file() and path.read_text() == dumps(store_digest(store))
