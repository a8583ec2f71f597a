"""The partition aligner (pure policy) and the hit-time peek it reads."""

from __future__ import annotations

from protosessions.aligner import PartitionAligner
from protosessions.hit import peek_time_us
from protosessions.timefmt import parse_time_us

S = 1_000_000


def test_a_partition_ahead_of_the_slowest_busy_one_waits() -> None:
    a = PartitionAligner(max_skew_us=S)
    a.join("p0")
    a.join("p1")
    a.read("p0", 100 * S)
    assert a.may_read("p0") is False  # p1 has read nothing yet: wait for its first poll
    assert a.may_read("p1")
    a.read("p1", 99 * S)
    assert a.may_read("p0") and a.may_read("p1")  # within the skew
    a.read("p1", 200 * S)
    assert a.may_read("p0") and not a.may_read("p1")


def test_idle_and_finished_partitions_hold_nobody_back() -> None:
    a = PartitionAligner(max_skew_us=S, idle_after_s=1.0)
    for p in ("p0", "p1", "p2"):
        a.join(p)
    a.read("p0", 500 * S)
    a.read("p1", 10 * S)
    a.empty("p2", 0.0)
    assert not a.may_read("p0")  # p2 may only be waiting for a fetch: it holds p0 too
    a.empty("p2", 1.0)  # empty for the grace period: caught up with its tail
    assert not a.may_read("p0")  # p1 still holds it
    a.empty("p1", 5.0)
    assert not a.may_read("p0")  # an empty poll is not idleness yet
    a.empty("p1", 6.5)
    assert a.may_read("p0")
    a.read("p1", 11 * S)  # has data again: back in the race
    assert not a.may_read("p0")
    a.leave("p1")  # finished
    assert a.may_read("p0")


def test_progress_never_goes_back_and_unparsed_batches_keep_it() -> None:
    a = PartitionAligner(max_skew_us=S)
    a.join("p0")
    a.join("p1")
    a.read("p0", 50 * S)
    a.read("p0", 10 * S)  # a late hit last in its batch
    a.read("p0", None)
    a.read("p1", 48 * S)
    assert not a.may_read("p0")  # still at 50 s


def test_peek_time_us_reads_the_plain_field_only() -> None:
    t = "2025-01-01T00:00:01.5+01:00"
    assert peek_time_us(b'{"id":"x","server_received_time" : "' + t.encode() + b'"}') == parse_time_us(t)
    assert peek_time_us(b'{"id":"x"}') is None
    assert peek_time_us(b'{"server_received_time":"yesterday"}') is None
    assert peek_time_us(b'{"server_received_time":1}') is None
    assert peek_time_us(b'\xff\xfe"server_received_time":"\xff"') is None


def test_partitions_of_peer_processes_count_while_fresh() -> None:
    a = PartitionAligner(max_skew_us=S, max_peer_skew_us=S)
    a.join("0-hits")
    a.read("0-hits", 100 * S)
    a.remote("peer", {"1-hits": 10 * S, "2-hits": None}, now_s=50.0)  # 2-hits idle there
    assert not a.may_read("0-hits", now_s=50.5)
    a.remote("peer", {"1-hits": 99 * S, "2-hits": None}, now_s=51.0)
    assert a.may_read("0-hits", now_s=51.5)
    a.remote("peer", {"1-hits": 10 * S}, now_s=52.0)
    assert not a.may_read("0-hits", now_s=53.0)
    assert a.may_read("0-hits", now_s=60.0)  # the peer went silent: ignored


def test_partitions_nobody_reported_yet_hold_during_the_startup_grace() -> None:
    a = PartitionAligner(max_skew_us=S)
    a.expect(["0-hits", "1-hits"], until_s=5.0)
    a.join("0-hits")
    a.read("0-hits", 100 * S)
    assert a.may_read("0-hits", now_s=1.0)  # no peers publish: nothing to wait for
    a.use_peers()
    assert not a.may_read("0-hits", now_s=1.0)  # 1-hits: read by a peer not heard from yet
    a.remote("peer", {"1-hits": 100 * S}, now_s=1.5)
    assert a.may_read("0-hits", now_s=2.0)
    b = PartitionAligner(max_skew_us=S)
    b.use_peers()
    b.expect(["0-hits", "1-hits"], until_s=5.0)
    b.join("0-hits")
    b.read("0-hits", 100 * S)
    assert b.may_read("0-hits", now_s=5.0)  # grace over: nobody publishes it
    c = PartitionAligner(max_skew_us=S)
    c.use_peers()
    c.expect(["0-hits", "1-hits"], until_s=5.0)
    for p in ("0-hits", "1-hits"):
        c.join(p)
    c.read("0-hits", 100 * S)
    c.leave("1-hits")  # finished here: holds nobody back
    assert c.may_read("0-hits", now_s=1.0)


def test_peers_get_their_own_looser_bound() -> None:
    a = PartitionAligner(max_skew_us=S, max_peer_skew_us=60 * S)
    for p in ("0-hits", "1-hits"):
        a.join(p)
    a.read("0-hits", 100 * S)
    a.read("1-hits", 98 * S)
    assert not a.may_read("0-hits", now_s=1.0)  # 2 s ahead of a partition read here
    a.read("1-hits", 100 * S)
    a.remote("peer", {"2-hits": 50 * S}, now_s=1.0)
    assert a.may_read("0-hits", now_s=1.0)  # 50 s ahead of a peer's: within 60 s
    a.remote("peer", {"2-hits": 30 * S}, now_s=1.0)
    assert not a.may_read("0-hits", now_s=1.0)
