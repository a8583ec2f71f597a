"""Shard routing keys and where Bytewax puts them (`flows.placement`):
measured with Bytewax itself, on a tiny flow run on N workers."""

from __future__ import annotations

from collections import Counter

import pytest

from flows.placement import bytewax_worker, measured_placement as placed, shard_keys


@pytest.mark.parametrize("workers", [5, 16])
def test_the_model_places_keys_as_bytewax_does(workers: int) -> None:
    keys = (list(shard_keys("s", 64)) + [f"s{i}" for i in range(64)] + list(shard_keys("i", 16))
            + ["", "é", "x" * 23, "s12.345"])
    assert placed(keys, workers) == {k: bytewax_worker(k, workers) for k in keys}


@pytest.mark.parametrize("workers", [1, 2, 4, 8, 16])
def test_every_worker_gets_its_share_of_the_shards(workers: int) -> None:
    """Default shard counts on a power-of-two worker count: exactly even
    (plain names `s0..s63` gave the busiest of 16 workers 2.4 times its share)."""
    sessions, identity = list(shard_keys("s", 64)), list(shard_keys("i", 16))
    where = placed(sessions + identity, workers)
    assert Counter(where[k] for k in sessions) == {w: 64 // workers for w in range(workers)}
    assert Counter(where[k] for k in identity) == {w: 16 // workers for w in range(workers)}


def test_names_are_the_shard_numbers_and_unique() -> None:
    for shards in (1, 3, 64, 100, 1025):
        names = shard_keys("s", shards)
        assert len(set(names)) == shards
        assert all(n == f"s{i}" or n.startswith(f"s{i}.") for i, n in enumerate(names))
