"""Property tests: random small hit streams and settings through `Engine` (and the
real Bytewax flow), checked against SPEC invariants and a plain reference model."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.hit import Hit, parse_hit
from protosessions.session import session_id
from protosessions.timefmt import format_time_us
from spec_metrics import spec_metrics

S = 1_000_000
T0 = 1_740_816_000 * S  # 2025-03-01T08:00:00Z
PROPS = ("G-1", "G-2")
CLIENTS = ("c0", "c1", "c2", "c3")
IPS = (None, "ip0", "ip1", "ip2")
USERS = (None, None, "u0", "u1")
STAMPS = (None, None, None, "st0", "")

PROPS_SETTINGS = settings(max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


@st.composite
def engine_settings(draw) -> Settings:
    d = draw(st.sampled_from([10, 30, 60])) * S
    return Settings(
        session_duration_us=d,
        max_events=draw(st.integers(1, 6)),
        max_duration_us=draw(st.sampled_from([d // 2, d, 2 * d, 5 * d, 24 * 3600 * S])),
        tick_interval_us=draw(st.sampled_from([0, S, 3 * S, 17 * S])),
        compaction_threshold=draw(st.sampled_from([0, 1, 10**6])),
        allowed_lateness_us=draw(st.sampled_from([0, 5 * S, d])),
        join_by_session_stamp=draw(st.booleans()),
        join_by_user_id=draw(st.booleans()),
        shards=draw(st.sampled_from([1, 3, 64])),
    )


@st.composite
def streams(draw, d_us: int = 30 * S, allow_late: bool = True, allow_bad: bool = False):
    """(lines, in_order): JSONL lines; retries repeat an earlier line byte for byte."""
    n = draw(st.integers(1, 30))
    lines: list[bytes] = []
    times: list[int] = []
    t = T0
    clock = T0
    for i in range(n):
        kind = draw(st.sampled_from(["new"] * 8 + ["retry"] + (["late"] if allow_late else [])
                                    + (["bad"] if allow_bad else [])))
        if kind == "retry" and lines:
            j = draw(st.integers(max(0, len(lines) - 3), len(lines) - 1))
            lines.append(lines[j])
            times.append(times[j])
            continue
        if kind == "bad":
            lines.append(draw(st.sampled_from([b"{bad", b"[]", b'{"id":""}', b"\xff\xfe"])))
            times.append(None)  # type: ignore[arg-type]
            continue
        if kind == "late":
            ht = clock - draw(st.integers(0, 2 * d_us))
        else:
            gap = draw(st.sampled_from([0, 1, S, d_us // 3, d_us - 1, d_us, d_us + 1, 2 * d_us]))
            t = clock + gap
            ht = t
        clock = max(clock, ht)
        obj: dict = {"id": f"h{i}", "client_id": draw(st.sampled_from(CLIENTS)),
                     "property_id": draw(st.sampled_from(PROPS)),
                     "server_received_time": format_time_us(ht)}
        ip = draw(st.sampled_from(IPS))
        if ip is not None:
            obj["ip"] = ip
        uid = draw(st.sampled_from(USERS))
        if uid is not None:
            obj["user_id"] = uid
        stamp = draw(st.sampled_from(STAMPS))
        if stamp is not None:
            obj["query_params"] = {"sessionStamp": [stamp], "v": ["2"]}
        if draw(st.integers(0, 9)) == 0:
            obj["authoritative_client_id"] = draw(st.sampled_from(CLIENTS))
        if draw(st.booleans()):
            obj["x_unknown"] = {"n": i, "f": 1.5}
        lines.append(orjson.dumps(obj))
        times.append(ht)
    valid_times = [x for x in times if x is not None]
    in_order = all(a <= b for a, b in zip(valid_times, valid_times[1:]))
    return lines, in_order


@st.composite
def cases(draw, allow_bad: bool = False):
    s = draw(engine_settings())
    lines, in_order = draw(streams(s.session_duration_us, allow_bad=allow_bad))
    return s, lines, in_order


def run(s: Settings, lines: list[bytes]) -> tuple[list[tuple[str, bytes]], Engine]:
    eng = Engine(s)
    return eng.run(lines, "gen.jsonl"), eng


# --- a plain reference model of the SPEC rules ---------------------------------------------------

def reference(s: Settings, lines: list[bytes]) -> tuple[list[dict], int]:
    """SPEC rules 1-5 and 7 without wheels, buckets or middlewares. At end of input a
    proto-session the clock has already expired (after the clock moved past its
    last hit) closes as `inactivity`, as the streaming ticks would have closed it."""
    D, lat = s.session_duration_us, s.allowed_lateness_us
    clock = 0
    claims: dict = {}
    open_: dict = {}
    out: list[dict] = []
    dups = 0

    def close(key, reason):
        ps = open_.pop(key)
        hits = sorted(ps["hits"], key=lambda h: h[0])
        objs = [orjson.loads(raw) for _, raw in hits]
        start, end = format_time_us(ps["first"]), format_time_us(ps["last"])
        out.append({"session_id": session_id(key[0], key[1], [o["id"] for o in objs]),
                    "property_id": key[0], "authoritative_client_id": key[1],
                    "client_ids": sorted(ps["cids"]), "user_ids": sorted(ps["uids"]),
                    "start": format_time_us(ps["first"]), "end": format_time_us(ps["last"]),
                    "hit_count": len(hits), "close_reason": reason,
                    "hits": [{**o, "authoritative_client_id": key[1]} for o in objs],
                    "metrics": spec_metrics(objs, start, end)})

    for raw in lines:
        h = parse_hit(raw, s, None)
        if not isinstance(h, Hit):
            continue
        t = h.t
        clock = max(clock, t)
        acid = h.acid
        if h.join_key is not None:
            ck = (h.property_id, h.join_key)
            c = claims.get(ck)
            if c is not None and not (t - c[1] >= D or clock - lat >= c[1] + D):
                acid = c[0]
                c[1] = max(c[1], t)
            else:
                claims[ck] = [acid, t]
        key = (h.property_id, acid)
        ps = open_.get(key)
        if ps is not None:
            if t - ps["last"] >= D or clock - lat >= ps["last"] + D:
                close(key, "inactivity")
            elif t - ps["first"] >= s.max_duration_us:
                close(key, "max_duration")
        ps = open_.get(key)
        if ps is not None and h.id in ps["ids"]:
            dups += 1
            continue
        if ps is None:
            ps = open_[key] = {"first": t, "last": t, "hits": [], "ids": set(),
                               "cids": set(), "uids": set(), "seen": clock}
        ps["first"] = min(ps["first"], t)
        ps["last"] = max(ps["last"], t)
        ps["seen"] = max(ps["seen"], clock)
        ps["hits"].append((t, raw))
        ps["ids"].add(h.id)
        ps["cids"].add(h.client_id)
        if h.user_id:
            ps["uids"].add(h.user_id)
        if len(ps["hits"]) >= s.max_events:
            close(key, "max_events")
    for key in list(open_):
        ps = open_[key]
        expired = clock - lat >= ps["last"] + D and clock > ps["seen"]
        close(key, "inactivity" if expired else "end_of_input")
    return out, dups


def by_id(sessions: list[dict]) -> dict[str, dict]:
    return {x["session_id"]: x for x in sessions}


# --- properties ------------------------------------------------------------------------------

@PROPS_SETTINGS
@given(cases())
def test_engine_matches_reference_model(case) -> None:
    s, lines, _ = case
    out, eng = run(s, lines)
    want, dups = reference(s, lines)
    got = [orjson.loads(b) for _, b in out]
    assert by_id(got) == by_id(want)
    assert len(got) == len(want)
    assert eng.sessions.stats["duplicates"] == dups


@PROPS_SETTINGS
@given(cases(allow_bad=True))
def test_engine_invariants(case) -> None:
    s, lines, in_order = case
    out, eng = run(s, lines)
    sessions = [orjson.loads(b) for _, b in out]
    valid = [orjson.loads(x) for x in lines if isinstance(parse_hit(x, s, None), Hit)]
    assert len(eng.dead_letters) == len(lines) - len(valid)

    # no hit lost or invented; duplicates account for the rest
    seen = Counter(h["id"] for x in sessions for h in x["hits"])
    given_ids = Counter(h["id"] for h in valid)
    assert set(seen) == set(given_ids)
    assert all(seen[i] <= given_ids[i] for i in seen)
    assert sum(seen.values()) + eng.sessions.stats["duplicates"] == len(valid)

    # session_id names the content: sessions share one only when they have the same
    # property, ACID and hit ids in order (a retry alone again after its session closed)
    by_sid: dict = {}
    for x in sessions:
        by_sid.setdefault(x["session_id"], set()).add(
            (x["property_id"], x["authoritative_client_id"], tuple(h["id"] for h in x["hits"])))
    assert all(len(contents) == 1 for contents in by_sid.values())
    if all(n == 1 for n in given_ids.values()):
        assert len(by_sid) == len(sessions)
    for (acid, _), x in zip(out, sessions):
        assert x["authoritative_client_id"] == acid
        assert x["hit_count"] == len(x["hits"]) <= s.max_events
        assert all(h["authoritative_client_id"] == acid for h in x["hits"])
        assert len({h["id"] for h in x["hits"]}) == len(x["hits"])  # no dup inside
        assert x["client_ids"] == sorted({h["client_id"] for h in x["hits"]})
        assert x["user_ids"] == sorted({h["user_id"] for h in x["hits"] if h.get("user_id")})
        times = [h["server_received_time"] for h in x["hits"]]
        assert x["start"] <= x["end"]
        assert [format_time_us(parse_hit(orjson.dumps(h), s, None).t) for h in x["hits"]] == \
            sorted(format_time_us(parse_hit(orjson.dumps(h), s, None).t) for h in x["hits"])
        assert len(times) >= 1
        assert x["session_id"] == session_id(x["property_id"], acid, [h["id"] for h in x["hits"]])
        assert x["close_reason"] in ("inactivity", "max_events", "max_duration", "end_of_input")
        if x["close_reason"] == "max_events":
            assert x["hit_count"] == s.max_events

    if in_order:
        groups: dict = {}
        for x in sessions:
            groups.setdefault((x["property_id"], x["authoritative_client_id"]), []).append(x)
        for group in groups.values():
            group.sort(key=lambda x: (x["start"], x["end"]))
            for prev, nxt in zip(group, group[1:]):
                assert nxt["start"] >= prev["end"], (prev, nxt)
        for x in sessions:
            span = _us(x["end"]) - _us(x["start"])
            assert span < s.max_duration_us
            if x["close_reason"] != "max_events":
                gaps = [_t(b) - _t(a) for a, b in zip(x["hits"], x["hits"][1:])]
                assert all(g < s.session_duration_us for g in gaps)


def _us(text: str) -> int:
    from protosessions.timefmt import parse_time_us
    return parse_time_us(text)  # type: ignore[return-value]


def _t(hit: dict) -> int:
    return _us(hit["server_received_time"])


@PROPS_SETTINGS
@given(cases(allow_bad=True), st.sampled_from([0, S, 5 * S, 3600 * S]),
       st.sampled_from([0, 1, 300, 10**6]))
def test_output_independent_of_tick_and_compaction(case, tick: int, compaction: int) -> None:
    s, lines, _ = case
    base, base_eng = run(s, lines)
    other, other_eng = run(replace(s, tick_interval_us=tick, compaction_threshold=compaction),
                           lines)
    assert sorted(b for _, b in other) == sorted(b for _, b in base)
    assert other_eng.sessions.stats["duplicates"] == base_eng.sessions.stats["duplicates"]


@PROPS_SETTINGS
@given(cases())
def test_rerun_is_byte_identical(case) -> None:
    s, lines, _ = case
    assert run(s, lines)[0] == run(s, lines)[0]


# --- the real Bytewax flow -------------------------------------------------------------------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(allow_bad=True), st.integers(1, 7))
def test_bytewax_flow_equals_engine(case, batch_size: int) -> None:
    from bytewax.testing import TestingSink, run_main

    from flows.sessions import build_flow
    from flows.sources import ListSource
    from protosessions import stats
    from flows.options import RunConfig

    s, lines, _ = case
    items = [(("gen.jsonl", n), raw) for n, raw in enumerate(lines, 1)]
    got: list = []
    dead: list = []
    flow = build_flow(RunConfig(s, {}), source=ListSource([items], s, batch_size),
                      sessions_sink=TestingSink(got), dead_sink=TestingSink(dead))
    stats.reset()
    run_main(flow)
    out, eng = run(s, lines)
    assert sorted(got) == sorted(out)
    assert sorted(v for _, v in dead) == sorted(d.to_json() for d in eng.dead_letters)
    assert stats.totals()["duplicates"] == eng.sessions.stats["duplicates"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(allow_bad=True), st.integers(1, 4), st.integers(1, 7), st.integers(1, 3),
       st.randoms(use_true_random=False))
def test_partitions_give_the_sessions_of_their_time_merge(case, parts: int, batch_size: int,
                                                           workers: int, rnd) -> None:
    """SPEC rule 2: hits dealt at random over partitions (each keeping its
    order), read by any number of workers in batches of any size, give the
    sessions of one file holding the partitions' time merge."""
    from bytewax.testing import TestingSink, cluster_main, run_main

    from flows.sessions import build_flow
    from flows.sources import ListSource
    from protosessions import stats
    from protosessions.merge import merged
    from flows.options import RunConfig

    s, lines, _ = case
    partitions: list[list] = [[] for _ in range(parts)]
    for n, raw in enumerate(lines, 1):
        partitions[rnd.randrange(parts)].append((("gen.jsonl", n), raw))
    got: list = []
    flow = build_flow(RunConfig(s, {}), source=ListSource(partitions, s, batch_size),
                      sessions_sink=TestingSink(got), dead_sink=TestingSink([]))
    stats.reset()
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    out, eng = run(s, merged([[raw for _, raw in p] for p in partitions], s))
    assert sorted(got) == sorted(out)
    assert stats.totals()["duplicates"] == eng.sessions.stats["duplicates"]
