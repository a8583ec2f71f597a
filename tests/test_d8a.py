"""SPEC "The d8a form" and rule 1's identity rules `d8a`, in the library:
the mapping and its validation (SPEC order and names), the hits written
back in the d8a form, d8a's stamp and two-key claims, and the fixture that
d8a's own worker sessionised (tests/d8a: 534 hits, 26 sessions)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from d8a_support import (EVENTS, HITS, QUEUE, d8a_sessions, grouping, line_to_d8a, to_d8a)
from protosessions import d8a, hit as hit_module
from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.hit import Hit, parse_hit
from test_properties import cases

S = 1_000_000
D8A_FORM = Settings(input_format="d8a")

BASE = {"ID": "h1", "AuthoritativeClientID": "c1", "ClientID": "c1", "EventName": "page_view",
        "PropertyID": "G-1", "UserID": None, "Metadata": {"protocol": "ga4"},
        "Request": {"IP": "10.0.0.1", "Host": "example.com",
                    "ServerReceivedTime": "2026-12-01T21:13:10.906029274Z",
                    "QueryParams": {"en": ["page_view"]}, "Body": "", "Path": "/g/collect",
                    "Method": "POST", "Headers": {"User-Agent": ["ua"]}}}


def d8a_hit(**changes) -> bytes:
    """BASE with top-level `changes` (None deletes a key; `Request__X` a request field)."""
    obj = orjson.loads(orjson.dumps(BASE))
    for name, value in changes.items():
        where, key = (obj["Request"], name[9:]) if name.startswith("Request__") else (obj, name)
        if value is _DELETE:
            where.pop(key, None)
        else:
            where[key] = value
    return orjson.dumps(obj)


_DELETE = object()


def both_paths(raw: bytes, s: Settings = D8A_FORM, wall: int | None = None,
               monkeypatch: pytest.MonkeyPatch | None = None) -> Hit | str:
    """`parse_hit` of a d8a-form hit, asserting that the typed fast path and
    `check_d8a` agree on it."""
    fast = parse_hit(raw, s, wall)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(hit_module, "_decode_d8a", _refuse)
        slow = parse_hit(raw, s, wall)
    finally:
        mp.undo()
    assert _fields(fast) == _fields(slow)
    return fast


def _refuse(raw: bytes):
    raise ValueError("forced slow path")


def _fields(h: Hit | str):
    if isinstance(h, str):
        return h
    return (h.t, h.clock, h.id, h.property_id, h.client_id, h.acid, h.user_id, h.join_key,
            h.raw, h.has_acid, h.key, h.params, h.d8a_form)


# --- the mapping ---------------------------------------------------------------------------------

def test_every_fixture_hit_parses_with_the_mapped_fields() -> None:
    lines = HITS.read_bytes().splitlines()
    assert len(lines) == 534
    for raw in lines:
        h = both_paths(raw)
        obj = orjson.loads(raw)
        assert isinstance(h, Hit) and h.d8a_form
        assert (h.id, h.client_id, h.property_id) == (obj["ID"], obj["ClientID"], obj["PropertyID"])
        assert h.acid == (obj["AuthoritativeClientID"] or obj["ClientID"])
        assert h.user_id == (obj["UserID"] or None)


def test_nine_fraction_digits_are_cut_to_microseconds() -> None:
    h = both_paths(d8a_hit(Request__ServerReceivedTime="2026-12-01T21:13:10.906029999Z"))
    assert h.t == parse_hit(b'{"id":"a","client_id":"c","property_id":"p","server_received_time":'
                            b'"2026-12-01T21:13:10.906029Z"}', Settings(), None).t


def test_an_empty_or_null_authoritative_client_id_is_not_set() -> None:
    for value in ("", None):
        h = both_paths(d8a_hit(AuthoritativeClientID=value, ClientID="c9"))
        assert h.acid == "c9" and h.has_acid
    h = both_paths(d8a_hit(AuthoritativeClientID=_DELETE, ClientID="c9"))
    assert h.acid == "c9" and not h.has_acid
    assert both_paths(d8a_hit(AuthoritativeClientID="other")).acid == "other"


def test_event_name_and_unknown_keys_pass_through() -> None:
    raw = d8a_hit(EventName=7, Extra={"n": [1, 2.5]}, Request__Proto="HTTP/1.1")
    h = both_paths(raw)
    assert isinstance(h, Hit) and h.raw == raw


@pytest.mark.parametrize("changes, reason", [
    ({"ID": _DELETE}, "missing_field:id"),
    ({"ID": ""}, "missing_field:id"),
    ({"ID": None}, "missing_field:id"),
    ({"ID": 5}, "bad_type:id"),
    ({"ClientID": _DELETE}, "missing_field:client_id"),
    ({"ClientID": ["c"]}, "bad_type:client_id"),
    ({"PropertyID": ""}, "missing_field:property_id"),
    ({"PropertyID": 1}, "bad_type:property_id"),
    ({"Request": _DELETE}, "missing_field:server_received_time"),
    ({"Request": None}, "missing_field:server_received_time"),
    ({"Request": "GET /"}, "missing_field:server_received_time"),
    ({"Request": []}, "missing_field:server_received_time"),
    ({"Request__ServerReceivedTime": _DELETE}, "missing_field:server_received_time"),
    ({"Request__ServerReceivedTime": 17}, "bad_type:server_received_time"),
    ({"ID": 5, "Request": None}, "bad_type:id"),  # the table's order: id first
    ({"Request__ServerReceivedTime": "2026-12-01"}, "bad_timestamp"),
    ({"Request__ServerReceivedTime": "2026-12-01T21:13:10"}, "bad_timestamp"),
    ({"Request__ServerReceivedTime": "1969-12-31T23:59:59Z"}, "bad_timestamp"),
    ({"Request__ServerReceivedTime": "x", "Request__IP": 1}, "bad_timestamp"),
    ({"AuthoritativeClientID": 3}, "bad_type:authoritative_client_id"),
    ({"Request__IP": 1}, "bad_type:ip"),
    ({"Request__Host": {}}, "bad_type:host"),
    ({"Request__Method": True}, "bad_type:method"),
    ({"Request__Path": []}, "bad_type:path"),
    ({"Request__Body": 0}, "bad_type:body"),
    ({"UserID": 42}, "bad_type:user_id"),
    ({"Request__QueryParams": {"en": "page_view"}}, "bad_type:query_params"),
    ({"Request__QueryParams": []}, "bad_type:query_params"),
    ({"Request__Headers": {"Accept": [1]}}, "bad_type:headers"),
    ({"Metadata": {"protocol": 2}}, "bad_type:metadata"),
    ({"Metadata": "ga4"}, "bad_type:metadata"),
    # several bad optional fields: the first in the table's order
    ({"Metadata": 1, "Request__Headers": 1, "UserID": 1, "Request__Body": 1},
     "bad_type:body"),
    ({"AuthoritativeClientID": 1, "Request__IP": 1}, "bad_type:authoritative_client_id"),
    ({"Request__ServerReceivedTime": "2999-01-01T00:00:00Z"}, "future_timestamp"),
    ({"Request__ServerReceivedTime": "2999-01-01T00:00:00Z", "UserID": 1}, "bad_type:user_id"),
])
def test_validation_in_spec_order_under_the_tables_names(changes: dict, reason: str) -> None:
    from protosessions.timefmt import wall_now_us

    assert both_paths(d8a_hit(**changes), wall=wall_now_us()) == reason


@pytest.mark.parametrize("raw, reason", [
    (b"", "not_json"),
    (b"{", "not_json"),
    (b"\xff", "not_json"),
    (b"[1]", "not_object"),
    (b'"ID"', "not_object"),
    (b"[18446744073709551616]", "not_json"),  # past 64 bits, even outside an object
    (b"{}", "missing_field:id"),
    (b'{"id":"h","client_id":"c","property_id":"p","server_received_time":'
     b'"2025-01-01T00:00:00Z"}', "missing_field:id"),  # the SPEC form is not the d8a form
])
def test_not_a_d8a_hit(raw: bytes, reason: str) -> None:
    assert both_paths(raw) == reason


def test_a_huge_integer_anywhere_is_not_json() -> None:
    assert both_paths(d8a_hit(EventName=0).replace(b'"EventName":0',
                                                   b'"EventName":18446744073709551616')) == "not_json"
    assert both_paths(d8a_hit(Request__Extra=[0]).replace(
        b'"Extra":[0]', b'"Extra":[-9223372036854775809]')) == "not_json"
    assert isinstance(both_paths(d8a_hit(EventName=2**64 - 1)), Hit)


def test_too_large_first() -> None:
    s = replace(D8A_FORM, max_hit_bytes=100)
    assert both_paths(d8a_hit(), s) == "too_large"
    assert both_paths(b"{" * 101, s) == "too_large"


# --- written back in the d8a form ----------------------------------------------------------------

def _session_hits(lines: list[bytes], s: Settings = D8A_FORM) -> list[list[dict]]:
    out = Engine(s, future_check=False).run(lines)
    return [orjson.loads(v)["hits"] for _, v in out]


def test_session_hits_are_written_back_in_the_d8a_form_with_their_acid() -> None:
    """Two clients joined by their IP: the second's hit is written as
    received, but for `AuthoritativeClientID`, now the session's ACID."""
    first = d8a_hit()
    second = d8a_hit(ID="h2", ClientID="c2", AuthoritativeClientID="c2",
                     Request__ServerReceivedTime="2026-12-01T21:13:11Z")
    [hits] = _session_hits([first, second])
    assert [h["AuthoritativeClientID"] for h in hits] == ["c1", "c1"]
    assert "authoritative_client_id" not in hits[1]
    assert hits[1] == {**orjson.loads(second), "AuthoritativeClientID": "c1"}
    record = orjson.loads(Engine(D8A_FORM, future_check=False).run([first, second])[0][1])
    assert record["authoritative_client_id"] == "c1" and record["client_ids"] == ["c1", "c2"]


def test_written_back_byte_for_byte_but_the_field() -> None:
    raw = d8a_hit(AuthoritativeClientID="")
    [[out]] = _session_hits([raw])
    assert out["AuthoritativeClientID"] == "c1"
    assert d8a.with_acid(raw, "c1", True) == raw.replace(b'"AuthoritativeClientID":""',
                                                         b'"AuthoritativeClientID":"c1"')


@pytest.mark.parametrize("raw", [
    b'{"ID":"h","ClientID":"c","PropertyID":"p","Request":{"ServerReceivedTime":'
    b'"2025-01-01T00:00:00Z"}}',  # no field: appended
    b'{"X":{"AuthoritativeClientID":"nested"},"ID":"h","ClientID":"c","PropertyID":"p",'
    b'"AuthoritativeClientID":null,"Request":{"ServerReceivedTime":"2025-01-01T00:00:00Z"}}',
    b'{"ID":"h","Authoritative\\u0043lientID":"a","ClientID":"c","PropertyID":"p",'
    b'"X":{"AuthoritativeClientID":"nested"},"Request":{"ServerReceivedTime":"2025-01-01T00:00:00Z"}}',
    b'{"ID":"h","AuthoritativeClientID":"a","Y":"AuthoritativeClientID","ClientID":"c",'
    b'"PropertyID":"p","Request":{"ServerReceivedTime":"2025-01-01T00:00:00Z"}}',
    b'{"ID":"h","AuthoritativeClientID" : "a" ,"ClientID":"c","PropertyID":"p",'
    b'"Request":{"ServerReceivedTime":"2025-01-01T00:00:00Z","Q":"\\u0026"}}',
])
def test_write_back_sets_the_top_level_field_however_spelled(raw: bytes) -> None:
    """Only the top-level value changes, whatever else holds its name."""
    [[out]] = _session_hits([raw], replace(D8A_FORM, join_by_session_stamp=False))
    obj = orjson.loads(raw)
    assert out == {**obj, "AuthoritativeClientID": obj.get("AuthoritativeClientID") or "c"}


# --- d8a's stamp ---------------------------------------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_stamp_of_fss() -> None:
    assert d8a.stamp("G-1", 0, "1.2.3.4", {"fss": ["abc", "x"]}, {"Accept": ["a"]}) == \
        _sha("fss=abc|G-1")


def test_stamp_of_headers_with_missing_ones_and_mixed_case_names() -> None:
    t = 1_764_633_600 * S  # 2025-12-02T00:00:00Z
    headers = {"accept": ["text/html", "x"], "USER-AGENT": ["Mozilla"], "Sec-Ch-Ua": ['"A";v="1"'],
               "sec-ch-ua-mobile": ["?0"], "Accept-Language": [], "Cookie": ["ignored"]}
    expect = _sha('text/html|||Mozilla|"A";v="1"|?0||||' + "|1.2.3.4|G-1|2025-12-02")
    assert d8a.stamp("G-1", t, "1.2.3.4", {"fss": [""]}, headers) == expect
    assert d8a.stamp("G-1", t, "1.2.3.4", None, headers) == expect
    assert d8a.stamp("G-1", t, None, {}, None) == _sha("|" * 9 + "||G-1|2025-12-02")


def test_stamp_header_names_differing_only_in_case_take_the_first() -> None:
    headers = {"Accept": ["first"], "ACCEPT": ["second"]}
    assert d8a.stamp("p", 0, "", None, headers) == _sha("first" + "|" * 9 + "||p|1970-01-01")


def test_stamp_date_is_the_utc_date_of_a_non_utc_time() -> None:
    raw = d8a_hit(Request__ServerReceivedTime="2025-01-01T23:30:00-02:00",
                  Request__QueryParams={}, Request__Headers={}, Request__IP="ip")
    h = parse_hit(raw, replace(D8A_FORM, identity_rules="d8a"), None)
    assert h.join_key == "s:" + _sha("|" * 9 + "|ip|G-1|2025-01-02")
    h = parse_hit(raw.replace(b"23:30:00-02:00", b"21:59:59-02:00"),
                  replace(D8A_FORM, identity_rules="d8a"), None)
    assert h.join_key == "s:" + _sha("|" * 9 + "|ip|G-1|2025-01-01")


def test_join_keys_under_d8a_rules_in_both_forms() -> None:
    """The stamp is the join key; the user ID is the hit's own field. The
    SPEC form gives the same stamp from the same fields."""
    s = Settings(identity_rules="d8a", input_format="d8a")
    raw = d8a_hit(UserID="u1")
    h = both_paths(raw, s)
    assert h.user_id == "u1"
    assert h.join_key == "s:" + d8a.stamp("G-1", h.t, "10.0.0.1", {"en": ["page_view"]},
                                          {"User-Agent": ["ua"]})
    spec = parse_hit(orjson.dumps({k: v for k, v in d8a.spec_fields(orjson.loads(raw)).items()
                                   if v is not None}), replace(s, input_format="spec"), None)
    assert spec.join_key == h.join_key
    assert both_paths(raw, replace(s, join_by_session_stamp=False)).join_key is None


# --- d8a's two-key claims ------------------------------------------------------------------------

def _hit(i: int, cid: str, t_s: float, uid: str | None = None, fss: str | None = None,
         pid: str = "G-1") -> bytes:
    t = "2025-01-01T00:00:%09.6fZ" % t_s
    return orjson.dumps(to_d8a({"id": f"h{i}", "client_id": cid, "property_id": pid,
                                "server_received_time": t, "user_id": uid,
                                "query_params": {"fss": [fss]} if fss else {}}))


def _groups(lines: list[bytes], **kw) -> list[tuple[str, list[str]]]:
    s = Settings(input_format="d8a", identity_rules="d8a", session_duration_us=10 * S, **kw)
    out = Engine(s, future_check=False).run(lines)
    return sorted((r["authoritative_client_id"], [h["ID"] for h in r["hits"]])
                  for r in (orjson.loads(v) for _, v in out))


def test_user_id_owned_by_one_acid_and_stamp_by_another() -> None:
    """A's user ID, B's stamp: C's hit carrying both goes to the user ID's
    owner; C claims nothing either owns, and a key nobody owned (C's own
    later stamp) is claimed by C itself, not by the owner."""
    lines = [_hit(1, "A", 1, uid="u"), _hit(2, "B", 2, fss="f"),
             _hit(3, "C", 3, uid="u", fss="f"),  # -> A (user ID first)
             _hit(4, "D", 4, fss="f"),  # -> B: the stamp is still B's, C never took it
             _hit(5, "C", 5, uid="u", fss="g"),  # -> A; stamp g claimed by C
             _hit(6, "E", 6, fss="g")]  # -> C: g's owner is C, not A
    assert _groups(lines) == [("A", ["h1", "h3", "h5"]), ("B", ["h2", "h4"]), ("C", ["h6"])]


def test_stamp_owner_when_the_user_id_is_the_hits_own() -> None:
    lines = [_hit(1, "A", 1, fss="f"), _hit(2, "B", 2, uid="u", fss="f")]  # u: B's own
    assert _groups(lines) == [("A", ["h1", "h2"])]
    lines.append(_hit(3, "C", 3, uid="u"))  # u was claimed by B
    assert _groups(lines) == [("A", ["h1", "h2"]), ("B", ["h3"])]
    assert _groups(lines, join_by_user_id=False) == [("A", ["h1", "h2"]), ("C", ["h3"])]
    assert _groups(lines, join_by_session_stamp=False) == [("A", ["h1"]), ("B", ["h2", "h3"])]


def test_a_claim_lapses_after_the_session_duration() -> None:
    """Seen again by its owner, a claim lives on; a hit of another ACID does
    not refresh it, so it lapses 10 s after its owner's last hit."""
    lines = [_hit(1, "A", 1, fss="f"), _hit(2, "A", 8, fss="f"), _hit(3, "B", 12, fss="f"),
             _hit(4, "C", 17.9, fss="f"), _hit(5, "D", 18, fss="f"), _hit(6, "E", 19, fss="f")]
    # 3 and 4 join A (claim last seen at 8); at 18 it lapsed: D claims it, E joins D
    assert _groups(lines) == [("A", ["h1", "h2", "h3", "h4"]), ("D", ["h5", "h6"])]


def test_the_same_keys_in_another_property_never_meet() -> None:
    lines = [_hit(1, "A", 1, uid="u", fss="f"), _hit(2, "B", 2, uid="u", fss="f", pid="G-2")]
    assert _groups(lines) == [("A", ["h1"]), ("B", ["h2"])]


def test_the_fixture_groups_as_d8a_did() -> None:
    """The 534 hits d8a's receiver published, sessionised with d8a's rules
    and its 2 s timeout: d8a's own 26 sessions, hit for hit."""
    s = Settings(input_format="d8a", identity_rules="d8a", session_duration_us=2 * S)
    out = Engine(s, future_check=False).run(HITS.read_bytes().splitlines())
    got = grouping([orjson.loads(v) for _, v in out])
    assert len(got) == 26 and got == d8a_sessions()


def test_the_fixture_under_strategy_evict_keeps_every_hit_once() -> None:
    """Strategy `evict` hands a joined client's keys to the owner, so later
    hits of that client follow it (d8a's worker rewrites: other sessions);
    no hit is lost or doubled."""
    s = Settings(input_format="d8a", identity_rules="d8a", session_duration_us=2 * S,
                 eviction_strategy="evict")
    engine = Engine(s, future_check=False)
    out = engine.run(HITS.read_bytes().splitlines())
    ids = [h["ID"] for _, v in out for h in orjson.loads(v)["hits"]]
    assert sorted(ids) == sorted(orjson.loads(r)["ID"] for r in HITS.read_bytes().splitlines())
    assert not engine.dead_letters


def test_the_fixture_with_classic_rules_is_not_d8a() -> None:
    """The classic stamp (IP) joins every hit of one IP: 8 sessions."""
    s = Settings(input_format="d8a", session_duration_us=2 * S)
    out = Engine(s, future_check=False).run(HITS.read_bytes().splitlines())
    assert len(out) == 8


# --- the same hits in both forms -----------------------------------------------------------------

def _without_hits(out: list[tuple[str, bytes]]) -> list[dict]:
    rows = []
    for _, v in out:
        r = orjson.loads(v)
        r["hits"] = [(h.get("ID", h.get("id")), h.get("AuthoritativeClientID",
                                                       h.get("authoritative_client_id")))
                     for h in r["hits"]]
        rows.append(r)
    return sorted(rows, key=lambda r: r["session_id"])


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(allow_bad=True), st.sampled_from(["classic", "d8a"]))
def test_both_forms_of_the_same_hits_give_the_same_sessions(case, rules: str) -> None:
    s, lines, _ = case
    s = replace(s, identity_rules=rules)
    spec = Engine(s, future_check=False)
    form = Engine(replace(s, input_format="d8a"), future_check=False)
    a = spec.run(lines)
    b = form.run([line_to_d8a(raw) for raw in lines])
    assert _without_hits(a) == _without_hits(b)
    assert [d.reason for d in spec.dead_letters] == [d.reason for d in form.dead_letters]


def test_fixture_is_the_shared_one_cut_as_documented() -> None:
    """tests/d8a is shared/d8a (tests/d8a/CUT.md): the queue and the hits
    byte for byte, the worker's rows cut to `id` and `session_id`."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "d8a"
    if not shared.is_dir():
        pytest.skip("no ../shared/d8a beside this checkout")
    assert HITS.read_bytes() == (shared / "hits.jsonl").read_bytes()
    assert sorted(p.name for p in QUEUE.iterdir()) == sorted(p.name for p in (shared / "queue").iterdir())
    for p in QUEUE.iterdir():
        assert p.read_bytes() == (shared / "queue" / p.name).read_bytes()
    rows = [orjson.loads(line) for line in (shared / "d8a_worker_events.jsonl").read_bytes().splitlines()]
    assert EVENTS.read_bytes() == b"".join(
        orjson.dumps({"id": r["id"], "session_id": r["session_id"]}) + b"\n" for r in rows)
