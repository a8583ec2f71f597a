"""flows.routing: a hit goes only to its shard; progress reaches a shard that
got no hit when it can change what that shard does (SPEC rules 2 and 3)."""

from __future__ import annotations

from types import SimpleNamespace

from flows.routing import Router

S = 1_000_000
T0 = 1_740_816_000 * S


def hit(shard: int, m: int) -> SimpleNamespace:
    return SimpleNamespace(shard=shard, order=m.to_bytes(8, "big") + bytes(12), t=m, clock=m)


def router(deadline=None) -> Router:
    return Router(("a", "b", "c", "d"), lambda h: h.shard, heartbeat_s=3600.0, deadline=deadline)


def shards(items: list) -> list[int]:
    return sorted(i for _, (i, _, _) in items)


def test_first_progress_reaches_every_shard_then_hits_only_their_own() -> None:
    r = router()
    assert shards(r.route([([], (0, T0, False, 1, T0))])) == [0, 1, 2, 3]
    out = r.route([([hit(2, T0 + 1)], (0, T0 + 1, False, 1, T0 + 1))])
    assert shards(out) == [2]
    assert out[0][1][2] == ((0, T0 + 1, False, 1, T0 + 1),)  # the progress rides along


def test_a_shard_holding_hits_is_told_when_the_watermark_passes_them() -> None:
    r = router()
    r.route([([], (0, T0, False, 1, T0))])
    r.route([([hit(1, T0 + 5)], (0, T0 + 5, False, 1, T0 + 5))])  # held: M = watermark
    out = r.route([([hit(3, T0 + 9)], (0, T0 + 9, False, 1, T0 + 9))])
    assert shards(out) == [1, 3]
    out = r.route([([hit(3, T0 + 10)], (0, T0 + 10, False, 1, T0 + 10))])
    assert shards(out) == [3]  # shard 1 holds nothing more from us


def test_done_changing_reaches_every_shard() -> None:
    r = router()
    r.route([([], (0, T0, False, 1, T0))])
    assert shards(r.route([([], (0, T0, True, 1, T0))])) == [0, 1, 2, 3]
    assert shards(r.route([([], (0, T0 + 1, True, 1, T0 + 1))])) == []  # only the clock moved


def test_a_shard_is_told_once_the_clock_reaches_its_close_deadline() -> None:
    r = router(deadline=lambda h: h.t + 30 * S)
    r.route([([], (0, T0, True, 1, T0))])
    r.route([([hit(2, T0)], (0, T0, True, 1, T0))])
    assert shards(r.route([([hit(0, T0 + 29 * S)], (0, T0 + 29 * S, True, 1, T0 + 29 * S))])) == [0]
    out = r.route([([hit(0, T0 + 30 * S)], (0, T0 + 30 * S, True, 1, T0 + 30 * S))])
    assert shards(out) == [0, 2]
    assert out[1][1][2] == ((0, T0 + 30 * S, True, 1, T0 + 30 * S),)


def test_the_heartbeat_tells_every_shard_what_it_missed() -> None:
    r = Router(("a", "b"), lambda h: h.shard, heartbeat_s=0.0)
    r.route([([], (0, T0, True, 1, T0))])
    assert shards(r.route([([hit(0, T0 + 1)], (0, T0 + 1, True, 1, T0 + 1))])) == [0, 1]


def test_pending_close_deadlines_cost_bytes_not_a_set_of_shards_each() -> None:
    """A long session duration keeps a deadline a second of stream time
    pending for each shard that got a hit in it: 64 shards each time."""
    import tracemalloc

    names = tuple(f"s{i}" for i in range(64))
    r = Router(names, lambda h: h.shard, heartbeat_s=3600.0, deadline=lambda h: h.t + 86_400 * S)
    r.route([([], (0, T0, True, 1, T0))])
    batches = [[hit(i, T0 + k * S) for i in range(64)] for k in range(1_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for k, hits in enumerate(batches):
        r.route([(hits, (0, T0 + k * S, True, 1, T0 + k * S))])
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(r.due) == 1_000
    assert kept < 1_000 * 300  # a set of 64 shards alone is 2 KiB
    out = r.route([([], (0, T0 + 86_400 * S + 500 * S, True, 1, T0 + 86_400 * S + 500 * S))])
    assert shards(out) == list(range(64))  # the clock passed half of them: every shard told
    assert len(r.due) == 499
