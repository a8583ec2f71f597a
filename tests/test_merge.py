"""The time merge computed locally (protosessions/merge.py) and its memory
bound in the flow (flows/backlog.py)."""

from __future__ import annotations

import random

import orjson
from bytewax.testing import TestingSink, run_main
from hypothesis import given, settings, strategies as st

from flows.backlog import backlog
from flows.sessions import build_flow
from flows.sources import ListSource
from protosessions.config import Settings
from protosessions.hit import Hit, parse_hit
from protosessions.merge import (END, MergeBuffer, PartitionReader, Watermark, key_m, merge_key,
                                  merged)
from flows.options import RunConfig
from protosessions.timefmt import format_time_us

S = 1_000_000
T0 = 1_735_689_600 * S


def raw(i: int, t: int, cid: str = "c") -> bytes:
    return orjson.dumps({"id": f"h{i}", "client_id": cid, "property_id": "P",
                         "server_received_time": format_time_us(t)})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=5))
def test_key_order_is_the_head_by_head_merge(times: list[list[int]]) -> None:
    """SPEC rule 2: ordering hits by `(M, partition, offset)` is the merge of
    the partitions' heads by `t` (ties: lower partition), and each hit's `M`
    is the greatest `t` handled up to it."""
    s = Settings()
    parts, n = [], 0
    for ts in times:
        lines = []
        for t in ts:
            n += 1
            lines.append(raw(n, T0 + t * S))
        parts.append(lines)
    stamped: list[Hit] = []
    for p, lines in enumerate(parts):
        hits, dead = PartitionReader(s, p, len(parts)).read(
            [(o, r, ("f", o)) for o, r in enumerate(lines)], None)
        assert not dead
        stamped.extend(hits)
    by_key = sorted(stamped, key=lambda h: h.order)
    assert [h.raw for h in by_key] == merged(parts, s)
    clock = 0
    for h in by_key:
        clock = max(clock, h.t)
        assert h.clock == clock


def test_dead_letters_take_no_part() -> None:
    reader = PartitionReader(Settings(), 1, 2)
    hits, dead = reader.read([(0, raw(1, T0), ("f", 1)), (1, b"{", ("f", 2)),
                              (2, raw(2, T0 - S), ("f", 3))], None)
    assert [d.reason for d in dead] == ["not_json"]
    assert [h.order for h in hits] == [merge_key(T0, 1, 0), merge_key(T0, 1, 2)]
    assert [key_m(h.order) for h in hits] == [T0, T0]
    assert reader.progress(False) == (1, T0, False, 2, T0)
    assert reader.progress(False) is None  # unchanged: nothing to report
    assert reader.progress(True) == (1, T0, True, 2, T0)


def test_watermark_waits_for_every_source_and_ignores_done_ones() -> None:
    w = Watermark()
    w.update((0, 10, False, 2, 10))
    assert w.watermark() == -1  # source 1 never heard of: hold everything
    w.update((1, 5, False, 2, 5))
    assert (w.watermark(), w.clock()) == (5, 5)
    w.update((1, 5, True, 2, 5))  # ended or caught up: holds nothing back
    assert (w.watermark(), w.clock()) == (10, 10)
    w.update((0, 10, True, 2, 10))
    assert (w.watermark(), w.clock()) == (END, 10)
    restored = Watermark.restore(w.snapshot())
    assert restored.watermark() == 5  # resumed: not caught up until told so


def test_buffer_releases_below_the_watermark_in_key_order() -> None:
    s = Settings()
    a, _ = PartitionReader(s, 0, 2).read([(0, raw(1, T0 + 3 * S), None),
                                          (1, raw(2, T0 + 5 * S), None)], None)
    b, _ = PartitionReader(s, 1, 2).read([(0, raw(3, T0 + 3 * S), None)], None)
    buf = MergeBuffer()
    buf.add(b)
    buf.add(a)
    assert buf.release(T0 + 3 * S) == []  # M equal to the watermark waits
    assert [h.id for h in buf.release(T0 + 4 * S)] == ["h1", "h3"]
    assert [h.id for h in buf.release(END)] == ["h2"]


def test_a_partition_far_ahead_is_paused_within_the_bound() -> None:
    """Partition 0 holds the second hour of hits, partitions 1-3 the first:
    partition 0's hits all wait for the others. With `max_held_hits` the
    process holds at most about that many; the sessions do not change."""
    rnd = random.Random(3)
    first = [(T0 + rnd.randrange(3600 * S), f"c{rnd.randrange(50)}") for _ in range(9000)]
    ahead = [(T0 + 3600 * S + rnd.randrange(3600 * S), f"c{rnd.randrange(50)}")
             for _ in range(9000)]
    parts = [[], [], [], []]
    for i, (t, c) in enumerate(sorted(ahead)):
        parts[0].append((("p0", i), raw(i, t, c)))
    for i, (t, c) in enumerate(sorted(first)):
        parts[1 + i % 3].append((("p", i), raw(10_000 + i, t, c)))

    def run(limit: int) -> tuple[list, int]:
        s = Settings()
        out: list = []
        config = RunConfig(s, {"max_held_hits": limit})
        run_main(build_flow(config, source=ListSource(parts, s, 20),
                            sessions_sink=TestingSink(out), dead_sink=TestingSink([])))
        return sorted(out), backlog.peak

    unbounded, peak_unbounded = run(10**9)
    bounded, peak_bounded = run(200)
    assert bounded == unbounded
    assert peak_unbounded > 2000  # the case does hold partition 0 back
    assert peak_bounded <= 200 + 4 * 20 * 4


def test_buffer_runs_release_as_one_stable_sort_would() -> None:
    """Random batches (in order, out of order, with equal keys), random
    watermarks, more batches than the buffer keeps runs: each release is
    what one stable sort of everything held would release."""
    rnd = random.Random(7)
    s = Settings()
    for _ in range(30):
        buf, reference = MergeBuffer(), []
        for step in range(80):
            if rnd.random() < 0.6:
                hits = [parse_hit(raw(rnd.randrange(10**6), T0 + S), s, None) for _ in range(rnd.randrange(5))]
                for h in hits:
                    m = rnd.randrange(50)
                    h.order = merge_key(m, rnd.randrange(3), rnd.randrange(3))  # equal keys happen
                buf.add(hits)
                reference.extend(hits)
            else:
                w = rnd.choice([rnd.randrange(60), END])
                reference.sort(key=lambda h: h.order)
                expect = [h for h in reference if key_m(h.order) < w]
                reference = [h for h in reference if key_m(h.order) >= w]
                assert buf.release(w) == expect
                assert len(buf) == len(reference) == len(buf.pending)


def test_a_merge_key_orders_as_its_tuple() -> None:
    rnd = random.Random(11)
    keys = [(rnd.choice([0, 1, T0, END - 1]) + rnd.randrange(3), rnd.randrange(4),
             rnd.choice([0, 1, 2**63 - 1, rnd.randrange(2**40)])) for _ in range(2000)]
    assert sorted(keys) == sorted(keys, key=lambda k: merge_key(*k))
    assert all(key_m(merge_key(*k)) == k[0] for k in keys)


def test_a_hit_batch_crosses_processes_whole() -> None:
    """Between processes a shard's hits travel as one MessagePack value; with
    an `Evict` among them, as a pickled list. Either way every field of every
    hit arrives, merge key included."""
    import pickle

    from protosessions.hit import Evict, HitBatch

    s = Settings()
    hits, _ = PartitionReader(s, 3, 4).read(
        [(2**40 + i, raw(i, T0 + i * S, f"c{i}"), None) for i in range(5)], None)
    hits[1].repoint("owner")
    fields = [tuple(getattr(h, f) for f in Hit.__struct_fields__) for h in hits]
    plain = pickle.loads(pickle.dumps(HitBatch(hits)))
    assert [tuple(getattr(h, f) for f in Hit.__struct_fields__) for h in plain] == fields
    assert key_m(plain[4].order) == T0 + 4 * S and plain[1].key == ("P", "owner")
    evict = Evict("P", "c1", "owner", T0, hits[1].order)
    mixed = pickle.loads(pickle.dumps(HitBatch([evict, *hits])))
    assert mixed[0].owner == "owner" and mixed[0].order == hits[1].order
    assert [h.id for h in mixed[1:]] == [h.id for h in hits]
