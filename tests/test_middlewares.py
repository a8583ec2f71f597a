"""Unit tests of the middleware chain with hand-made hits: close trigger, dedup,
compaction, identity, session JSON, snapshots."""

from __future__ import annotations

import hashlib
import pickle

import hypothesis
import orjson
from hypothesis import strategies as hst
import pytest

from protosessions.clock import Clock
from protosessions.closer import CollectingCloser, PrintingCloser
from protosessions.config import Settings
from protosessions.engine import IdentityShard, SessionShard
from protosessions.hit import Hit
from protosessions.middleware import BaseMiddleware, Context, handler
from protosessions.middlewares import Compaction, Dedup
from protosessions.middlewares.identity import ClaimTable, IdentityJoin
from protosessions.session import session_id, session_json
from protosessions.state import ProtoSession, ShardState
from protosessions.testing import do_tick, stop_close_trigger
from protosessions.timefmt import format_time_us

S = 1_000_000
T0 = 1_740_816_000 * S  # 2025-03-01T08:00:00Z
D = 60 * S               # session duration used in these tests


def settings(**kw) -> Settings:
    kw.setdefault("session_duration_us", D)
    return Settings(**kw)


def mk(id: str, t: int, cid: str = "c1", prop: str = "P", clock: int | None = None,
       acid: str | None = None, user_id: str | None = None, join_key: str | None = None,
       extra: bytes = b"") -> Hit:
    obj = {"id": id, "client_id": cid, "property_id": prop,
           "server_received_time": format_time_us(t)}
    if user_id:
        obj["user_id"] = user_id
    raw = orjson.dumps(obj)
    if extra:
        raw = raw[:-1] + b"," + extra + b"}"
    acid = acid or cid
    return Hit(t, t if clock is None else clock, id, prop, cid, acid, user_id, join_key, raw,
               False, (prop, acid))


class Feeder:
    """A SessionShard fed one hit at a time with a running clock (as the engine does)."""

    def __init__(self, st: Settings, snapshot: tuple | None = None) -> None:
        self.shard = SessionShard(st, Clock(), snapshot)
        self.clock = self.shard.ctx.clock.now
        self.out: list[dict] = []

    def hit(self, id: str, t: int, **kw) -> list[dict]:
        self.clock = max(self.clock, t)
        kw.setdefault("clock", self.clock)
        closed = [orjson.loads(b) for _, b in self.shard.on_hits([mk(id, t, **kw)])]
        self.out.extend(closed)
        return closed

    def tick(self, ts: int) -> list[dict]:
        do_tick(self.shard.ctx, ts)
        closed = [orjson.loads(b) for _, b in self.shard.closer.take()]
        self.out.extend(closed)
        return closed

    def finish(self) -> list[dict]:
        closed = [orjson.loads(b) for _, b in self.shard.close_all()]
        self.out.extend(closed)
        return closed


def ids(session: dict) -> list[str]:
    return [h["id"] for h in session["hits"]]


# --- close trigger ---------------------------------------------------------------------------

def test_inactivity_by_gap() -> None:
    f = Feeder(settings())
    assert f.hit("a", T0) == []
    assert f.hit("b", T0 + D - 1) == []
    closed = f.hit("c", T0 + 2 * D - 1)   # gap D from b: splits
    assert [(ids(s), s["close_reason"]) for s in closed] == [(["a", "b"], "inactivity")]
    [last] = f.finish()
    assert ids(last) == ["c"] and last["close_reason"] == "end_of_input"


def test_gap_equal_to_duration_splits_and_one_less_does_not() -> None:
    f = Feeder(settings())
    f.hit("a", T0)
    assert f.hit("b", T0 + D - 1) == []
    [s] = f.hit("c", T0 + D - 1 + D)
    assert ids(s) == ["a", "b"]


def test_inactivity_by_clock_for_late_hit() -> None:
    """Another client's hit moves the clock to L + D: a late hit for c1 (t < clock)
    finds its proto-session expired and opens a new one."""
    f = Feeder(settings(tick_interval_us=3600 * S))  # big tick: no clock close by ping
    f.hit("a", T0, cid="c1")
    assert f.hit("x", T0 + D, cid="c2") == []
    closed = f.hit("b", T0 + 10 * S, cid="c1")        # t - L < D but clock - L >= D
    assert [(ids(s), s["close_reason"]) for s in closed] == [(["a"], "inactivity")]
    out = f.finish()
    assert sorted(ids(s)[0] for s in out) == ["b", "x"]


def test_inactivity_by_clock_respects_allowed_lateness() -> None:
    L = 20 * S
    f = Feeder(settings(tick_interval_us=3600 * S, allowed_lateness_us=L))
    f.hit("a", T0, cid="c1")
    f.hit("x", T0 + D + L - 1, cid="c2")
    assert f.hit("b", T0 + 10 * S, cid="c1") == []     # within lateness: joins
    f.hit("y", T0 + 10 * S + D + L, cid="c2")          # clock reaches b + D + L
    [s] = f.hit("c", T0 + 20 * S, cid="c1")
    assert ids(s) == ["a", "b"] and s["close_reason"] == "inactivity"


@pytest.mark.parametrize("tick", [S, 7 * S])
def test_clock_close_emitted_at_most_one_tick_late(tick: int) -> None:
    f = Feeder(settings(tick_interval_us=tick))
    f.hit("a", T0)                      # expires at clock T0 + D
    expiry = T0 + D
    bucket_end = (expiry // tick + 1) * tick     # first clock of the next bucket
    assert f.tick(expiry - 1) == []
    assert f.tick(bucket_end - 1) == []
    [s] = f.tick(bucket_end)
    assert bucket_end - expiry <= tick
    assert ids(s) == ["a"] and s["close_reason"] == "inactivity"
    assert f.shard.empty


def test_on_ping_closes_only_passed_buckets() -> None:
    f = Feeder(settings())
    f.hit("a", T0, cid="c1")
    f.hit("b", T0 + 30 * S, cid="c2")
    f.hit("c", T0 + 50 * S, cid="c3")
    closed = f.tick(T0 + D + 31 * S)    # c1 and c2 expired (buckets passed), c3 not
    assert sorted(ids(s)[0] for s in closed) == ["a", "b"]
    assert set(f.shard.state.sessions) == {("P", "c3")}
    assert f.tick(T0 + D + 50 * S) == []         # expiry bucket not yet passed
    assert [ids(s) for s in f.tick(T0 + D + 51 * S)] == [["c"]]


def test_max_duration() -> None:
    f = Feeder(settings(max_duration_us=100 * S))
    f.hit("a", T0)
    f.hit("b", T0 + 50 * S)
    assert f.hit("c", T0 + 99 * S) == []
    [s] = f.hit("d", T0 + 100 * S)      # t - first == max_duration: closes
    assert ids(s) == ["a", "b", "c"] and s["close_reason"] == "max_duration"
    [rest] = f.finish()
    assert ids(rest) == ["d"]


def test_inactivity_wins_over_max_duration() -> None:
    f = Feeder(settings(max_duration_us=D))
    f.hit("a", T0)
    [s] = f.hit("b", T0 + D)
    assert s["close_reason"] == "inactivity"


def test_max_events_closes_with_the_filling_hit() -> None:
    f = Feeder(settings(max_events=3))
    assert f.hit("a", T0) == []
    assert f.hit("b", T0 + 1) == []
    [s] = f.hit("c", T0 + 2)
    assert ids(s) == ["a", "b", "c"] and s["close_reason"] == "max_events"
    assert s["hit_count"] == 3
    assert f.shard.empty
    f.hit("d", T0 + 2)
    [rest] = f.finish()
    assert ids(rest) == ["d"] and rest["close_reason"] == "end_of_input"


def test_max_events_one() -> None:
    f = Feeder(settings(max_events=1))
    for i in range(3):
        [s] = f.hit(f"h{i}", T0)
        assert ids(s) == [f"h{i}"] and s["close_reason"] == "max_events"
    assert f.finish() == []


def test_end_reason_inactivity_when_clock_already_expired() -> None:
    f = Feeder(settings(tick_interval_us=3600 * S))
    f.hit("a", T0, cid="c1")
    f.hit("b", T0 + D, cid="c2")
    out = {ids(s)[0]: s["close_reason"] for s in f.finish()}
    assert out == {"a": "inactivity", "b": "end_of_input"}


def test_do_tick_moves_clock_and_state_clock() -> None:
    f = Feeder(settings())
    f.hit("a", T0)
    do_tick(f.shard.ctx, T0 + 5 * S)
    assert f.shard.ctx.clock.now == T0 + 5 * S and f.shard.state.clock == T0 + 5 * S
    do_tick(f.shard.ctx, T0)                     # never goes back
    assert f.shard.ctx.clock.now == T0 + 5 * S and f.shard.state.clock == T0 + 5 * S


def test_stop_close_trigger_stops_clock_closes_only() -> None:
    f = Feeder(settings())
    stop_close_trigger(f.shard.ctx)
    f.hit("a", T0, cid="c1")
    f.hit("b", T0, cid="c2")
    assert f.tick(T0 + 100 * D) == []
    assert len(f.shard.state.sessions) == 2
    [s] = f.hit("c", T0 + 101 * D, cid="c1")     # hit-driven closes still happen
    assert ids(s) == ["a"] and s["close_reason"] == "inactivity"


def test_late_hit_opening_expired_session_not_closed_by_same_clock() -> None:
    f = Feeder(settings())
    f.hit("x", T0 + 10 * D, cid="c2")
    assert f.hit("late", T0, cid="c1") == []     # opens an already-expired proto-session
    assert f.tick(T0 + 10 * D) == []            # the same clock does not close it
    assert [ids(s) for s in f.tick(T0 + 10 * D + S)] == [["late"]]


# --- dedup --------------------------------------------------------------------------------------

def test_dedup_drops_and_counts() -> None:
    f = Feeder(settings())
    f.hit("a", T0)
    f.hit("a", T0 + S)
    f.hit("b", T0 + 2 * S)
    f.hit("a", T0 + 3 * S)
    assert f.shard.stats["duplicates"] == 2
    [s] = f.finish()
    assert ids(s) == ["a", "b"] and s["hit_count"] == 2


def test_same_id_after_close_is_not_a_duplicate() -> None:
    f = Feeder(settings(max_events=2))
    f.hit("a", T0)
    f.hit("b", T0 + S)                           # closes (max_events)
    f.hit("a", T0 + 2 * S)
    f.hit("a", T0 + 2 * S + D)                   # after inactivity: new session again
    assert f.shard.stats["duplicates"] == 0
    assert sorted(ids(s) for s in f.finish() + f.out[:-1]) == [["a"], ["a"], ["a", "b"]]


def test_same_id_other_acid_or_property_is_not_a_duplicate() -> None:
    f = Feeder(settings())
    f.hit("a", T0, cid="c1")
    f.hit("a", T0, cid="c2")
    f.hit("a", T0, cid="c1", prop="Q")
    assert f.shard.stats["duplicates"] == 0
    assert len(f.finish()) == 3


def test_dedup_only_middleware() -> None:
    ctx = Context(settings(), ShardState(), Clock(), CollectingCloser(), [Dedup()])
    handler(ctx, [mk("a", T0), mk("a", T0), mk("b", T0)])
    assert ctx.stats["duplicates"] == 1
    assert ctx.sessions[("P", "c1")].count == 2


# --- compaction ---------------------------------------------------------------------------------

def stream() -> list[Hit]:
    hits = []
    times = [0, 5, 3, 3, 9, 9, 1, 20, 20, 2]  # out of order, with ties
    clock = 0
    for i, dt in enumerate(times):
        t = T0 + dt * S
        clock = max(clock, t)
        hits.append(mk(f"h{i}", t, clock=clock, extra=b'"pad":"' + b"x" * (i * 7) + b'"'))
    return hits


def run_shard(st: Settings, hits: list[Hit]) -> tuple[list[bytes], SessionShard]:
    shard = SessionShard(st, Clock())
    out = []
    for h in hits:
        out.extend(b for _, b in shard.on_hits([h]))
    out.extend(b for _, b in shard.close_all())
    return out, shard


@pytest.mark.parametrize("threshold", [1, 200, 500])
def test_compaction_does_not_change_output(threshold: int) -> None:
    off, s_off = run_shard(settings(compaction_threshold=0), stream())
    on, s_on = run_shard(settings(compaction_threshold=threshold), stream())
    assert on == off
    assert s_off.stats["compactions"] == 0
    assert s_on.stats["compactions"] > 0


def test_compaction_threshold_one_compacts_every_hit() -> None:
    hits = stream()
    _, shard = run_shard(settings(compaction_threshold=1), hits)
    assert shard.stats["compactions"] == len(hits)


def test_compaction_stats_count_and_collect_order() -> None:
    hits = stream()
    size = sum(len(h.raw) for h in hits[:3])
    st = settings(compaction_threshold=size)
    hits.append(mk("h10", T0 + 4 * S, clock=hits[-1].clock))  # small, stays uncompressed
    ctx = Context(st, ShardState(), Clock(), CollectingCloser(), [Compaction(st)])
    handler(ctx, hits)
    ps = ctx.sessions[("P", "c1")]
    # compacted (blocks merge as they seal, `ProtoSession.seal`), not all loose
    assert ctx.stats["compactions"] >= 2 and ps.compacted and len(ps.hits) < len(hits)
    collected = ctx.collect_all(("P", "c1"))
    # arrival order
    assert [(t, orjson.loads(r)["id"]) for t, r, _ in collected] == [(h.t, h.id) for h in hits]
    out = orjson.loads(session_json(ps, collected, "x"))
    # sorted by time, ties in arrival order
    assert ids(out) == ["h0", "h6", "h9", "h2", "h3", "h10", "h1", "h4", "h5", "h7", "h8"]


# --- identity -----------------------------------------------------------------------------------

class Ident:
    def __init__(self, st: Settings) -> None:
        self.shard = IdentityShard(st)
        self.clock = 0

    def acid(self, id: str, t: int, cid: str, jk: str | None, prop: str = "P",
             user_id: str | None = None) -> str:
        self.clock = max(self.clock, t)
        [h] = self.shard.on_hits([mk(id, t, cid=cid, prop=prop, clock=self.clock, join_key=jk,
                                     user_id=user_id)])
        return h.acid


def test_identity_first_claim_wins() -> None:
    i = Ident(settings())
    assert i.acid("1", T0, "c1", "s:ip") == "c1"
    assert i.acid("2", T0 + S, "c2", "s:ip") == "c1"
    assert i.acid("3", T0 + 2 * S, "c1", "s:ip") == "c1"
    assert i.acid("4", T0 + 2 * S, "c3", None) == "c3"


def test_identity_claim_lapses_at_duration() -> None:
    i = Ident(settings(tick_interval_us=3600 * S))
    i.acid("1", T0, "c1", "s:ip")
    assert i.acid("2", T0 + D - 1, "c2", "s:ip") == "c1"       # refreshes last seen
    assert i.acid("3", T0 + 2 * D - 2, "c2", "s:ip") == "c1"
    assert i.acid("4", T0 + 3 * D - 2, "c2", "s:ip") == "c2"   # t - last == D: claimed anew
    assert i.acid("5", T0 + 3 * D - 1, "c1", "s:ip") == "c2"


def test_identity_claim_lapses_by_clock() -> None:
    i = Ident(settings(tick_interval_us=3600 * S))
    i.acid("1", T0, "c1", "s:ip")
    i.acid("2", T0 + D, "c9", None)                           # clock only
    assert i.acid("3", T0 + 1, "c2", "s:ip") == "c2"          # late, clock lapsed the claim


def test_identity_property_isolation() -> None:
    i = Ident(settings())
    assert i.acid("1", T0, "c1", "s:ip", prop="P") == "c1"
    assert i.acid("2", T0, "c2", "s:ip", prop="Q") == "c2"
    assert i.acid("3", T0, "c3", "s:ip", prop="Q") == "c2"
    assert i.acid("4", T0, "c4", "s:ip", prop="P") == "c1"


def test_identity_user_id_beats_stamp() -> None:
    """Through parse_hit: a hit with a user ID joins by user, not by its shared IP."""
    from protosessions.engine import Engine

    def line(id, cid, t, **kw):
        return orjson.dumps({"id": id, "client_id": cid, "property_id": "P",
                             "server_received_time": format_time_us(t), "ip": "1.1.1.1", **kw})

    out = Engine(settings(), future_check=False).run([
        line("1", "c1", T0),
        line("2", "c2", T0 + S, user_id="u2"),      # same ip, but joins by user u2 -> own
        line("3", "c3", T0 + 2 * S, user_id="u2"),  # joins c2 through u2
        line("4", "c4", T0 + 3 * S),                # ip -> c1
    ])
    got = sorted((acid, sorted(orjson.loads(b)["client_ids"])) for acid, b in out)
    assert got == [("c1", ["c1", "c4"]), ("c2", ["c2", "c3"])]


def test_identity_purge_on_ping_empties_table() -> None:
    st = settings()
    i = Ident(st)
    i.acid("1", T0, "c1", "s:a")
    i.acid("2", T0 + 30 * S, "c2", "u:b")
    i.acid("3", T0 + 30 * S, "c3", "s:a", prop="Q")
    assert len(i.shard.table.claims) == 3
    do_tick(i.shard.ctx, T0 + D + 2 * S)
    assert set(i.shard.table.claims) == {("P", "u:b"), ("Q", "s:a")}
    do_tick(i.shard.ctx, T0 + 30 * S + D + S)
    assert i.shard.table.claims == {} and i.shard.empty


def test_identity_join_middleware_directly() -> None:
    st = settings()
    table = ClaimTable()
    out: list[Hit] = []
    ctx = Context(st, ShardState(), Clock(), CollectingCloser(), [IdentityJoin(st, table)],
                  terminal=out.append)
    handler(ctx, [mk("1", T0, cid="c1", join_key="s:x"), mk("2", T0, cid="c2", join_key="s:x")])
    assert [h.acid for h in out] == ["c1", "c1"]
    assert table.claims[("P", "s:x")].owner == "c1"


# --- session JSON -------------------------------------------------------------------------------

def make_ps(hits: list[Hit], acid: str = "c1") -> tuple[ProtoSession, list]:
    ctx = Context(settings(), ShardState(), Clock(), CollectingCloser(), [])
    for h in hits:
        h.repoint(acid)
        ctx.store(h)
    key = ("P", acid)
    return ctx.sessions[key], ctx.collect_all(key)


def test_session_json_fields_and_format() -> None:
    hits = [mk("h2", T0 + 1500, cid="c9", user_id="u2"), mk("h1", T0 + 250, user_id="u1"),
            mk("h3", T0 + 10 * S, cid="c5")]
    ps, stored = make_ps(hits)
    data = session_json(ps, stored, "inactivity")
    out = orjson.loads(data)
    assert list(out) == ["session_id", "property_id", "authoritative_client_id", "client_ids",
                         "user_ids", "start", "end", "hit_count", "close_reason", "hits",
                         "metrics"]
    assert out["session_id"] == hashlib.sha256(b'["P","c1",["h1","h2","h3"]]').hexdigest()[:32]
    assert out["property_id"] == "P" and out["authoritative_client_id"] == "c1"
    assert out["client_ids"] == ["c1", "c5", "c9"] and out["user_ids"] == ["u1", "u2"]
    assert out["start"] == "2025-03-01T08:00:00.000250Z"
    assert out["end"] == "2025-03-01T08:00:10.000000Z"
    assert out["hit_count"] == 3 and out["close_reason"] == "inactivity"
    assert ids(out) == ["h1", "h2", "h3"]
    assert all(h["authoritative_client_id"] == "c1" for h in out["hits"])


def test_session_id_rule() -> None:
    assert session_id("G-1", "cid-1", ["h1", "h2"]) == \
        hashlib.sha256(b'["G-1","cid-1",["h1","h2"]]').hexdigest()[:32]
    # non-ASCII characters as they are (UTF-8), not \u-escaped
    assert session_id("p", "ä", ["é"]) == hashlib.sha256('["p","ä",["é"]]'.encode()).hexdigest()[:32]


def test_hits_sorted_by_time_ties_in_arrival_order() -> None:
    hits = [mk("b", T0 + 5), mk("a", T0 + 5), mk("z", T0), mk("c", T0 + 5), mk("y", T0)]
    ps, stored = make_ps(hits)
    out = orjson.loads(session_json(ps, stored, "x"))
    assert ids(out) == ["z", "y", "b", "a", "c"]
    assert out["session_id"] == session_id("P", "c1", ["z", "y", "b", "a", "c"])  # in "hits" order


def test_unknown_fields_preserved_byte_for_byte_and_acid_appended() -> None:
    extra = b'"x_num":1.0e2,"x_big":18446744073709551615,"x_obj":{"b":1,"a":[true,null]},' \
            b'"x_str":"\\u00e9\\n"'
    h = mk("h1", T0, extra=extra)
    original = h.raw
    ps, stored = make_ps([h], acid="owner")
    data = session_json(ps, stored, "x")
    assert original[:-1] + b',"authoritative_client_id":"owner"}' in data


def session_bytes(lines: list[bytes], **kw) -> list[bytes]:
    from protosessions.engine import Engine
    return [b for _, b in Engine(settings(**kw), future_check=False).run(lines)]


HIT = b'"client_id":"c1","property_id":"P","server_received_time":"2025-03-01T08:00:00Z"'


def test_acid_replaced_when_hit_carries_one() -> None:
    raw = b'{"id":"h1","authoritative_client_id":"old",' + HIT + b',"k":[1,2]}'
    [data] = session_bytes([raw])
    [h] = orjson.loads(data)["hits"]
    assert h["authoritative_client_id"] == "old"      # its own ACID is the starting ACID
    # joined to another owner: the field is replaced in place, key order kept
    owner = b'{"id":"h0","client_id":"c0","property_id":"P","ip":"9.9.9.9",' \
            b'"server_received_time":"2025-03-01T07:59:59Z"}'
    raw2 = b'{"id":"h1","authoritative_client_id":"old","ip":"9.9.9.9",' + HIT + b',"k":[1,2]}'
    [data] = session_bytes([owner, raw2])
    hits = orjson.loads(data)["hits"]
    assert [h["authoritative_client_id"] for h in hits] == ["c0", "c0"]
    assert list(hits[1]) == ["id", "authoritative_client_id", "ip", "client_id", "property_id",
                             "server_received_time", "k"]
    assert data.count(b'"authoritative_client_id"') == 3  # session + one per hit


def test_acid_null_in_hit_is_replaced() -> None:
    raw = b'{"id":"h1","authoritative_client_id":null,' + HIT + b'}'
    [data] = session_bytes([raw])
    [h] = orjson.loads(data)["hits"]
    assert h["authoritative_client_id"] == "c1"
    assert data.count(b'"authoritative_client_id"') == 2


def test_acid_nested_field_of_that_name_is_not_the_hits_own() -> None:
    raw = b'{"id":"h1",' + HIT + b',"x":{"authoritative_client_id":"zz"}}'
    [data] = session_bytes([raw])
    [h] = orjson.loads(data)["hits"]
    assert h["authoritative_client_id"] == "c1" and h["x"] == {"authoritative_client_id": "zz"}
    assert raw[:-1] + b',"authoritative_client_id":"c1"}' in data


def test_acid_appended_after_trailing_whitespace() -> None:
    raw = b'{"id":"h1",' + HIT + b'}  \t'
    [data] = session_bytes([raw])
    assert b'{"id":"h1",' + HIT + b',"authoritative_client_id":"c1"}' in data
    orjson.loads(data)


def test_acid_replaced_keeps_other_bytes() -> None:
    raw = b'{"id":"h1","authoritative_client_id":"c1",' + HIT + \
          b',"x_num":1.0e2, "x_sp" : [1, 2]}'
    [data] = session_bytes([raw])
    assert b'"x_num":1.0e2, "x_sp" : [1, 2]' in data


def test_printing_closer() -> None:
    import io
    buf = io.StringIO()
    ps, stored = make_ps([mk("h1", T0)])
    PrintingCloser(buf).close(ps, stored, "end_of_input")
    line = buf.getvalue()
    assert line.endswith("\n") and orjson.loads(line)["close_reason"] == "end_of_input"


def test_collecting_closer_take_empties() -> None:
    c = CollectingCloser()
    ps, stored = make_ps([mk("h1", T0)])
    c.close(ps, stored, "x")
    [(acid, data)] = c.take()
    assert acid == "c1" and orjson.loads(data)["hit_count"] == 1
    assert c.take() == []


# --- middleware plumbing --------------------------------------------------------------------------

def test_chain_order_cleanup_and_ping_reach_every_middleware() -> None:
    calls: list = []

    class Spy(BaseMiddleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def handle(self, ctx, hit, next):
            calls.append((self.name, "before", hit.id))
            next(hit)
            calls.append((self.name, "after", hit.id))

        def on_cleanup(self, ctx, acid):
            calls.append((self.name, "cleanup", acid))

        def on_ping(self, ctx, ts):
            calls.append((self.name, "ping", ts))

    ctx = Context(settings(), ShardState(), Clock(), CollectingCloser(), [Spy("a"), Spy("b")])
    handler(ctx, [mk("h", T0)])
    ctx.close(("P", "c1"), "x")
    ctx.close(("P", "c1"), "x")   # already closed: nothing
    assert calls == [("a", "before", "h"), ("b", "before", "h"), ("b", "after", "h"),
                     ("a", "after", "h"), ("a", "ping", T0), ("b", "ping", T0),
                     ("a", "cleanup", ("P", "c1")), ("b", "cleanup", ("P", "c1"))]
    assert ctx.stats["closed:x"] == 1 and not ctx.sessions


def test_handler_sorts_batch_by_clock_stably() -> None:
    ctx = Context(settings(), ShardState(), Clock(), CollectingCloser(), [])
    seen: list[str] = []
    ctx.entry = lambda h: seen.append(h.id)
    handler(ctx, [mk("b", T0, clock=T0 + 2), mk("a", T0, clock=T0 + 1), mk("c", T0, clock=T0 + 1)])
    assert seen == ["a", "c", "b"]
    assert ctx.state.clock == T0 + 2 and ctx.clock.now == T0 + 2


# --- snapshots ------------------------------------------------------------------------------------

def snapshot_stream() -> list[Hit]:
    spec = [("a", 0, "c1", "s:x"), ("b", 5, "c2", "s:x"), ("c", 10, "c3", "u:1"),
            ("d", 30, "c1", None), ("b", 31, "c2", "s:x"), ("e", 70, "c4", "s:y"),
            ("f", 75, "c2", "s:x"), ("g", 140, "c3", "u:1"), ("h", 141, "c5", "s:x"),
            ("i", 150, "c4", "s:y"), ("j", 400, "c6", None), ("k", 401, "c1", "s:x")]
    out, clock = [], 0
    for id, dt, cid, jk in spec:
        t = T0 + dt * S
        clock = max(clock, t)
        out.append(mk(id, t, cid=cid, clock=clock, join_key=jk))
    return out


def run_pipeline(st: Settings, hits: list[Hit], cut: int | None = None) -> list[bytes]:
    ident, sess = IdentityShard(st), SessionShard(st, Clock())
    out: list[bytes] = []
    for n, h in enumerate(hits):
        if n == cut:
            isnap = pickle.loads(pickle.dumps(ident.snapshot()))
            ssnap = pickle.loads(pickle.dumps(sess.snapshot()))
            ident, sess = IdentityShard(st, isnap), SessionShard(st, Clock(), ssnap)
        h = pickle.loads(pickle.dumps(h))
        out.extend(b for _, b in sess.on_hits(ident.on_hits([h])))
    out.extend(b for _, b in sess.close_all())
    return out


@pytest.mark.parametrize("compaction", [0, 1])
def test_snapshot_restore_round_trip_gives_identical_output(compaction: int) -> None:
    st = settings(max_events=4, compaction_threshold=compaction, tick_interval_us=7 * S)
    whole = run_pipeline(st, snapshot_stream())
    assert len(whole) >= 4
    for cut in range(1, len(snapshot_stream())):
        assert run_pipeline(st, snapshot_stream(), cut) == whole, cut


def test_shard_state_snapshot_restore_fields() -> None:
    f = Feeder(settings(compaction_threshold=150))
    for i in range(4):
        f.hit(f"h{i}", T0 + i * S)
    snap = f.shard.snapshot()
    state = ShardState.restore(snap)
    assert state.clock == f.shard.state.clock
    assert state.snapshot()[0:2] == snap[0:2]
    [(a, b)] = zip(state.sessions.values(), f.shard.state.sessions.values())
    assert a.small() == b.small() and set(a.ids) == set(b.ids) == {f"h{i}" for i in range(4)}
    assert a.all_hits() == b.all_hits()
    assert a.compacted  # compaction kept through the snapshot


def test_claim_table_snapshot_restore() -> None:
    i = Ident(settings())
    i.acid("1", T0, "c1", "s:x")
    i.acid("2", T0 + S, "c2", "u:y", prop="Q")
    table = ClaimTable.restore(i.shard.snapshot())
    assert table.snapshot() == i.shard.table.snapshot()
    j = Ident(settings())
    j.shard = IdentityShard(settings(), i.shard.snapshot())
    assert j.acid("3", T0 + 2 * S, "c9", "s:x") == "c1"
    do_tick(j.shard.ctx, T0 + 2 * S + D + S)   # restored wheel purges
    assert j.shard.empty


@pytest.mark.parametrize("snap", [(99, 0, ()), (0, 0, ()), ("1", 0, ()), (), None, [1, 0, ()]])
def test_unknown_snapshot_version_raises(snap) -> None:
    with pytest.raises(ValueError):
        ShardState.restore(snap)
    with pytest.raises(ValueError):
        ClaimTable.restore(snap)
    if snap is not None:  # None means "start afresh" to the shards
        with pytest.raises(ValueError):
            SessionShard(settings(), Clock(), snap)
        with pytest.raises(ValueError):
            IdentityShard(settings(), snap)


# --- eviction strategy ------------------------------------------------------------------------------

def test_evict_moves_clients_open_proto_session_into_owner() -> None:
    """SPEC rule 1, strategy `evict`: the hit's client's own open proto-session
    moves into the owner's."""
    from protosessions.engine import Engine

    def line(id, cid, t, **kw):
        return orjson.dumps({"id": id, "client_id": cid, "property_id": "P",
                             "server_received_time": format_time_us(t), **kw})

    lines = [line("1", "c1", T0, ip="1.1.1.1"),      # c1 claims the IP
             line("2", "c2", T0 + S),                # c2's own proto-session (no join key)
             line("3", "c2", T0 + 2 * S, ip="1.1.1.1")]  # joins c1: c2's session moves along
    out = Engine(settings(eviction_strategy="evict"), future_check=False).run(lines)
    got = sorted((acid, [h["id"] for h in orjson.loads(b)["hits"]]) for acid, b in out)
    assert got == [("c1", ["1", "2", "3"])]


def test_version_1_snapshot_written_before_acid_was_stored_resumes_or_is_refused() -> None:
    """A version-1 session snapshot as the first build wrote it: stored hits are the
    raw hits as received (no `authoritative_client_id` spliced in). Resuming it
    must still give hits with their ACID set, or refuse the snapshot (ValueError)."""
    raw = b'{"id":"h1",' + HIT + b'}'
    t = T0
    ps_state = ("P", "c1", t, "h1", t, 1, len(raw), ((t, raw),), (), ("h1",), ("c1",), (),
                (t + D) // S, t)
    snap = (1, t, (ps_state,))
    try:
        shard = SessionShard(settings(), Clock(), snap)
    except ValueError:
        return  # refused: fine
    [(_, data)] = shard.close_all()
    [h] = orjson.loads(data)["hits"]
    assert h.get("authoritative_client_id") == "c1"


@pytest.mark.parametrize("evict", [False, True])
def test_a_claim_is_filed_once_and_lapses_at_its_last_hit(evict: bool) -> None:
    """A claim seen again is not filed in the wheel again (one entry a
    claim, not one a hit), yet it lapses exactly a duration after its last hit."""
    st = settings(eviction_strategy="evict" if evict else "rewrite")
    shard = IdentityShard(st)
    for i in range(50):
        shard.on_hits([mk(f"h{i}", T0 + i * S, join_key="s:x")])
    assert sum(len(k) for k in shard.table.wheel.buckets.values()) == 1
    last = T0 + 49 * S
    shard.tick(last + D - 1)
    assert ("P", "s:x") in shard.table.claims
    shard.tick(last + D + S)
    assert not shard.table.claims and not shard.table.wheel.buckets


def test_hit_ids_are_exact() -> None:
    from protosessions.state import HitIds
    ids = HitIds(["abc", "x\0y", "é", ""])
    for i in ("abc", "x\0y", "é", ""):
        assert i in ids
    for i in ("ab", "bc", "b", "abc\0", "x", "y", "\0"):
        assert i not in ids
    assert sorted(ids) == sorted(["abc", "x\0y", "é", ""])


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(hst.lists(hst.text(alphabet="ab\0é", max_size=4), max_size=300),
                  hst.lists(hst.text(alphabet="ab\0é", max_size=5), max_size=50))
def test_hit_ids_answer_as_a_set_below_and_above_the_index(added: list[str], asked: list[str]) -> None:
    """Past `HitIds.INDEX_FROM` ids the check goes through a hash table: it
    must still answer exactly what a set of the ids would."""
    from protosessions.state import HitIds
    ids, kept = HitIds(), set()
    for i in added:
        ids.add(i)
        kept.add(i)
        assert i in ids
    for i in asked + added:
        assert (i in ids) == (i in kept)
    assert set(ids) == kept


def test_hit_ids_past_the_index_answer_for_ids_longer_than_any_held() -> None:
    """A probe that lands on a short id near the end of the buffer must not
    read past it."""
    from protosessions.state import HitIds
    ids = HitIds(f"h{i}" for i in range(300))
    for i in range(5000):
        assert (f"h{i}" in ids) == (i < 300)
        assert f"a-longer-id-{i}" not in ids


def test_sealed_blocks_merge_and_read_back_in_order() -> None:
    """Sealing a hit at a time leaves few blocks (their sizes grow), and the
    hits come back in arrival order."""
    ps = ProtoSession("P", "c1")
    hits = [mk(f"h{i}", T0 + i * S) for i in range(200)]
    for i, h in enumerate(hits):
        ps.hits.append((h.t, h.raw + b"x" * (i % 7), h.id))
        ps.seal()
    assert not ps.hits and len(ps.compacted) <= 12
    assert [h[2] for h in ps.all_hits()] == [h.id for h in hits]


def test_only_quiet_proto_sessions_are_sealed() -> None:
    from protosessions.state import SEAL_AFTER_US
    state = ShardState()
    st = settings(session_duration_us=3600 * S)
    ctx = Context(st, state, Clock(), CollectingCloser(), [])
    handler(ctx, [mk("a1", T0, cid="a"), mk("b1", T0, cid="b")])
    later = T0 + SEAL_AFTER_US - S
    handler(ctx, [mk("b2", later, cid="b", clock=later)])
    ctx.ping(T0 + SEAL_AFTER_US)
    a, b = ctx.sessions[("P", "a")], ctx.sessions[("P", "b")]
    assert not a.hits and a.compacted  # quiet for SEAL_AFTER_US: sealed
    assert len(b.hits) == 2 and not b.compacted  # a hit since: still loose
    ctx.ping(later + SEAL_AFTER_US)
    assert not b.hits and [h[2] for h in b.all_hits()] == ["b1", "b2"]


@pytest.mark.parametrize("chain", ["fast path", "chain"])
def test_a_proto_session_is_filed_once_and_closes_a_duration_after_its_last_hit(chain: str) -> None:
    """Hits that move a proto-session's expiry later do not file it in the
    wheel again (one entry, not one a hit); when its first bucket comes due
    it is filed under its current one, and it still closes exactly a
    duration after its last hit, not before."""
    f = Feeder(settings())
    if chain == "chain":
        f.shard.ctx.entry = f.shard.ctx._build_chain(f.shard.ctx.store)
    for i in range(50):
        f.hit(f"h{i}", T0 + i * S)
    wheel = f.shard.state.wheel
    assert sum(len(k) for k in wheel.buckets.values()) == 1
    last = T0 + 49 * S
    assert f.tick(last + D - 1) == []  # its first bucket passed: filed again, not closed
    assert sum(len(k) for k in wheel.buckets.values()) == 1
    [s] = f.tick(last + D + S)
    assert len(ids(s)) == 50 and s["close_reason"] == "inactivity"
    assert not wheel.buckets and not f.shard.state.sessions
