"""pipeline/shards.py: the one rule for splitting videos across --shard i/N processes."""

from __future__ import annotations

import pytest

from pipeline.shards import shard_items, stale_items


def test_shards_are_disjoint_and_complete_whatever_the_input_order():
    items = [f"v{k:02d}" for k in range(11)]
    parts = [shard_items(reversed(items), (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == items and sum(map(len, parts)) == 11
    assert parts[0] == ["v00", "v03", "v06", "v09"]


def test_a_bad_shard_is_one_line():
    with pytest.raises(ValueError, match="0 <= i < N, got 3/3"):
        shard_items(["a"], (3, 3))


def test_stale_items_of_the_shards_cover_each_stale_item_once():
    stored = [f"old{k}" for k in range(20)] + ["b", "d"]
    parts = [stale_items(stored, ["b", "d", "f"], (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(f"old{k}" for k in range(20))
    assert all(parts)                                   # the hash spreads them
    assert stale_items(stored, ["b", "d"], (0, 1)) == sorted(f"old{k}" for k in range(20))
