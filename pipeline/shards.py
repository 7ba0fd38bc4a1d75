"""Splitting work across processes: ``--shard i/N`` of ``extract``, ``bank`` and ``eval``."""

from __future__ import annotations

from collections.abc import Iterable


def shard_items(items: Iterable[str], shard: tuple[int, int]) -> list[str]:
    """Every N-th item (from the i-th) of the sorted items: deterministic, disjoint, and
    the N shards together hold every item once."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}")
    return [v for k, v in enumerate(sorted(items)) if k % n == i]
