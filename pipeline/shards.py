"""Splitting work across processes: ``--shard i/N`` of ``extract``, ``bank`` and ``eval``."""

from __future__ import annotations

import zlib
from collections.abc import Iterable


def shard_items(items: Iterable[str], shard: tuple[int, int]) -> list[str]:
    """Every N-th item (from the i-th) of the sorted items: deterministic, disjoint, and
    the N shards together hold every item once."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}")
    return [v for k, v in enumerate(sorted(items)) if k % n == i]


def stale_items(stored: Iterable[str], inputs: Iterable[str], shard: tuple[int, int]
                ) -> list[str]:
    """The stored items that are not ``inputs`` and that ``shard`` removes.

    A stale item has no position among the inputs, so its shard is a hash of its name
    (crc32 mod N, the same in every process): the N shards together remove each stale item
    once, however the others progress.
    """
    i, n = shard
    have = set(inputs)
    return [v for v in sorted(stored)
            if v not in have and (n == 1 or zlib.crc32(v.encode()) % n == i)]
