"""SPEC "Input: one hit" and "Rejection": check / parse_hit / join_key / DeadLetter."""

from __future__ import annotations

import base64

import orjson
import pytest

from protosessions.config import Settings
from protosessions.hit import DeadLetter, Hit, check, join_key, parse_hit, session_stamp
from protosessions.timefmt import parse_time_us

S = 1_000_000
SETTINGS = Settings()
T0 = "2025-01-01T12:00:00.123Z"
T0_US = 1735732800_123000
REQUIRED = ("id", "client_id", "property_id", "server_received_time")
OPTIONAL = ("authoritative_client_id", "ip", "host", "method", "path", "body", "user_id",
            "query_params", "headers", "metadata")


def base(**over) -> dict:
    obj = {"id": "h1", "client_id": "c1", "property_id": "G-1", "server_received_time": T0}
    for k, v in over.items():
        if v is DROP:
            obj.pop(k, None)
        else:
            obj[k] = v
    return obj


DROP = object()


def raw(obj) -> bytes:
    return orjson.dumps(obj)


def reason(data: bytes, settings: Settings = SETTINGS, wall: int | None = None) -> str | None:
    res = check(data, settings, wall)
    return res if isinstance(res, str) else None


def test_valid_minimal_hit() -> None:
    obj, t = check(raw(base()), SETTINGS, None)
    assert t == T0_US and obj["id"] == "h1"
    h = parse_hit(raw(base()), SETTINGS, None)
    assert isinstance(h, Hit)
    assert (h.t, h.clock, h.id, h.property_id, h.client_id, h.acid, h.user_id, h.join_key) == \
        (T0_US, T0_US, "h1", "G-1", "c1", "c1", None, None)
    assert h.raw == raw(base())


def test_valid_full_hit_and_null_optionals() -> None:
    full = base(authoritative_client_id="a", ip="1.2.3.4", host="h", method="POST", path="/g",
                body="eA==", user_id="u", query_params={"a": ["1", "2"], "b": []},
                headers={"User-Agent": ["x"]}, metadata={"k": "v"}, extra={"any": [1, None]})
    assert reason(raw(full)) is None
    nulls = base(**{f: None for f in OPTIONAL if f != "authoritative_client_id"})
    assert reason(raw(nulls)) is None


# --- 1. too_large ----------------------------------------------------------------

def test_too_large_boundary() -> None:
    data = raw(base())
    assert reason(data, Settings(max_hit_bytes=len(data))) is None
    assert reason(data, Settings(max_hit_bytes=len(data) - 1)) == "too_large"


def test_too_large_is_checked_before_json() -> None:
    assert reason(b"x" * 65537) == "too_large"
    assert reason(b"x" * 65536) == "not_json"
    assert reason(b"\xff" * 10, Settings(max_hit_bytes=5)) == "too_large"


# --- 2. not_json -------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"{not json", b"", b"{", b'{"id": "h1",}', b"\xff\xfe garbage",
    b'{"id":"h\xff","client_id":"c1","property_id":"G-1","server_received_time":"' + T0.encode() + b'"}',
    b'{"id":"h1","client_id":"c1","property_id":"G-1","server_received_time":"' + T0.encode() + b'","x":NaN}',
    b'{"id":"h1","client_id":"c1","property_id":"G-1","server_received_time":"' + T0.encode() + b'","x":Infinity}',
    b'{"id":"h1","client_id":"c1","property_id":"G-1","server_received_time":"' + T0.encode() + b'","x":1e400}',
    b'{"id":"\\ud800","client_id":"c1","property_id":"G-1","server_received_time":"' + T0.encode() + b'"}',
])
def test_not_json(data: bytes) -> None:
    assert reason(data) == "not_json"


@pytest.mark.parametrize("number", [b"18446744073709551615", b"-9223372036854775808"])
def test_64_bit_integers_are_json(number: bytes) -> None:
    data = raw(base())[:-1] + b',"x":' + number + b"}"
    assert reason(data) is None


@pytest.mark.parametrize("number", [b"18446744073709551616", b"-9223372036854775809",
                                    b"123456789012345678901234567890"])
def test_integers_beyond_64_bits_are_not_json(number: bytes) -> None:
    data = raw(base())[:-1] + b',"x":' + number + b"}"
    assert reason(data) == "not_json"


# --- 3. not_object -------------------------------------------------------------------

@pytest.mark.parametrize("data", [b'"just a string"', b"[1,2]", b"1", b"null", b"true", b"[]",
                                  b'[{"id":"h1"}]'])
def test_not_object(data: bytes) -> None:
    assert reason(data) == "not_object"


# --- 4. required fields -----------------------------------------------------------------

@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", [DROP, None, ""])
def test_missing_field(field: str, value) -> None:
    assert reason(raw(base(**{field: value}))) == f"missing_field:{field}"


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", [0, 1, 1.5, True, False, [], ["x"], {}, {"a": "b"}])
def test_required_bad_type(field: str, value) -> None:
    assert reason(raw(base(**{field: value}))) == f"bad_type:{field}"


def test_required_fields_checked_in_order() -> None:
    # every combination of two failing required fields: the earlier one wins
    for i, first in enumerate(REQUIRED):
        for second in REQUIRED[i + 1:]:
            assert reason(raw(base(**{first: DROP, second: 5}))) == f"missing_field:{first}"
            assert reason(raw(base(**{first: 5, second: None}))) == f"bad_type:{first}"
            assert reason(raw(base(**{first: "", second: ""}))) == f"missing_field:{first}"


# --- 5. bad_timestamp -------------------------------------------------------------------

@pytest.mark.parametrize("ts", [
    "2025-01-01",                 # date only
    "2025-01-01T12:00:00",        # no offset
    "2025-01-01T12:00:00.123",    # no offset
    "2025-01-01 12:00:00",        # no offset
    "garbage", "Tuesday", "T", "12:00:00Z", "2025-13-01T00:00:00Z", "2025-01-01T25:00:00Z",
    "2025-01-01Z", "1735732800", "2025-01-01T12:00:00+25:00",
])
def test_bad_timestamp(ts: str) -> None:
    assert reason(raw(base(server_received_time=ts))) == "bad_timestamp"


@pytest.mark.parametrize("ts, want", [
    ("2025-01-01T12:00:00Z", 1735732800 * S),
    ("2025-01-01T12:00:00+00:00", 1735732800 * S),
    ("2025-01-01T13:00:00+01:00", 1735732800 * S),
    ("2025-01-01 12:00:00-02:30", 1735732800 * S + 9000 * S),
    ("2025-01-01T12:00:00.123456Z", 1735732800 * S + 123456),
    ("2025-01-01T12:00:00.1Z", 1735732800 * S + 100000),
])
def test_good_timestamps(ts: str, want: int) -> None:
    assert parse_time_us(ts) == want
    assert check(raw(base(server_received_time=ts)), SETTINGS, None)[1] == want


# --- 6. optional fields -------------------------------------------------------------------

OPTIONAL_BAD = {
    "authoritative_client_id": [5, "", [], {}, True],
    "ip": [5, [], {}, True, 1.5],
    "host": [5, ["h"]],
    "method": [1, {"a": "b"}],
    "path": [False, ["/"]],
    "body": [0, {}],
    "user_id": [5, ["u"], {}, True],
    "query_params": ["x", [], ["a"], 5, {"a": "notalist"}, {"a": [1]}, {"a": ["x", None]},
                     {"a": [["x"]]}, {"a": None}, {"a": {"b": ["c"]}}],
    "headers": ["x", [], {"h": "v"}, {"h": [1]}, {"h": ["v", 2]}],
    "metadata": ["x", [], {"k": 1}, {"k": ["v"]}, {"k": None}, {"k": {"a": "b"}}, {"k": True}],
}


@pytest.mark.parametrize("field, value", [(f, v) for f, vs in OPTIONAL_BAD.items() for v in vs])
def test_optional_bad_type(field: str, value) -> None:
    assert reason(raw(base(**{field: value}))) == f"bad_type:{field}"


def test_optional_fields_checked_in_table_order() -> None:
    for i, first in enumerate(OPTIONAL):
        for second in OPTIONAL[i + 1:]:
            obj = base(**{first: OPTIONAL_BAD[first][0], second: OPTIONAL_BAD[second][0]})
            assert reason(raw(obj)) == f"bad_type:{first}", (first, second)


def test_empty_maps_and_lists_are_fine() -> None:
    assert reason(raw(base(query_params={}, headers={}, metadata={}))) is None
    assert reason(raw(base(query_params={"a": []}, headers={"h": []}))) is None
    assert reason(raw(base(ip="", host="", user_id=""))) is None


def test_user_id_empty_counts_as_absent() -> None:
    h = parse_hit(raw(base(user_id="", ip="1.2.3.4")), SETTINGS, None)
    assert isinstance(h, Hit)
    assert h.user_id is None and h.join_key == "s:1.2.3.4"
    h = parse_hit(raw(base(user_id=None)), SETTINGS, None)
    assert h.user_id is None and h.join_key is None


def test_authoritative_client_id_replaces_client_id_as_starting_acid() -> None:
    h = parse_hit(raw(base(authoritative_client_id="acid-9")), SETTINGS, None)
    assert isinstance(h, Hit)
    assert (h.client_id, h.acid) == ("c1", "acid-9")
    h = parse_hit(raw(base()), SETTINGS, None)
    assert h.acid == "c1"


# --- 7. future_timestamp --------------------------------------------------------------------

def test_future_timestamp_vs_skew() -> None:
    data = raw(base())
    skew = SETTINGS.max_future_skew_us
    assert reason(data, wall=T0_US - skew) is None          # exactly the skew ahead: fine
    assert reason(data, wall=T0_US - skew - 1) == "future_timestamp"
    assert reason(data, wall=None) is None                  # no wall clock: no check
    assert reason(data, Settings(max_future_skew_us=60 * S), wall=T0_US - 60 * S) is None
    assert reason(data, Settings(max_future_skew_us=60 * S), wall=T0_US - 61 * S) == \
        "future_timestamp"
    assert reason(data, wall=T0_US + 3600 * S) is None      # the past is fine


def test_future_timestamp_via_parse_hit() -> None:
    assert parse_hit(raw(base()), SETTINGS, T0_US - 11 * 60 * S) == "future_timestamp"


# --- first failing check wins -------------------------------------------------------------------

@pytest.mark.parametrize("data, settings, wall, want", [
    (b"[" * 100, Settings(max_hit_bytes=10), None, "too_large"),
    (b'"' + b"x" * 100 + b'"', Settings(max_hit_bytes=10), None, "too_large"),
    (raw(base(id=None, client_id=5)), SETTINGS, None, "missing_field:id"),
    (raw(base(id=5, client_id=None)), SETTINGS, None, "bad_type:id"),
    (raw(base(property_id="", server_received_time="x")), SETTINGS, None,
     "missing_field:property_id"),
    (raw(base(server_received_time="2025-01-01", ip=5)), SETTINGS, None, "bad_timestamp"),
    (raw(base(server_received_time=5, ip=5)), SETTINGS, None, "bad_type:server_received_time"),
    (raw(base(id=DROP, server_received_time="2025-01-01")), SETTINGS, None, "missing_field:id"),
    (raw(base(metadata={"k": 1}, server_received_time="2999-01-01T00:00:00Z")), SETTINGS,
     T0_US, "bad_type:metadata"),
    (raw(base(server_received_time="2999-01-01T00:00:00Z")), SETTINGS, T0_US,
     "future_timestamp"),
    (raw(base(authoritative_client_id="", user_id=1)), SETTINGS, None,
     "bad_type:authoritative_client_id"),
    (raw(base(user_id=1, query_params={"a": "b"})), SETTINGS, None, "bad_type:user_id"),
    (raw(base(body=1, user_id=1)), SETTINGS, None, "bad_type:body"),
])
def test_first_failing_check_wins(data: bytes, settings: Settings, wall, want: str) -> None:
    assert reason(data, settings, wall) == want


# --- join keys ----------------------------------------------------------------------------------

def jk(settings: Settings = SETTINGS, **fields) -> str | None:
    h = parse_hit(raw(base(**fields)), settings, None)
    assert isinstance(h, Hit)
    assert h.join_key == join_key(orjson.loads(h.raw), settings)
    return h.join_key


def test_join_key_selection() -> None:
    qp = {"sessionStamp": ["stamp-1", "stamp-2"]}
    assert jk(user_id="u1", ip="1.1.1.1", query_params=qp) == "u:u1"
    assert jk(ip="1.1.1.1", query_params=qp) == "s:stamp-1"
    assert jk(ip="1.1.1.1") == "s:1.1.1.1"
    assert jk(ip="1.1.1.1", query_params={"sessionStamp": [""]}) == "s:1.1.1.1"
    assert jk(ip="1.1.1.1", query_params={"sessionStamp": []}) == "s:1.1.1.1"
    assert jk(ip="1.1.1.1", query_params={"other": ["x"]}) == "s:1.1.1.1"
    assert jk(user_id="", ip="1.1.1.1") == "s:1.1.1.1"
    assert jk(user_id="", ip="") is None
    assert jk() is None
    assert jk(query_params={"sessionStamp": [""]}) is None


def test_join_key_flags() -> None:
    no_user = Settings(join_by_user_id=False)
    no_stamp = Settings(join_by_session_stamp=False)
    none = Settings(join_by_user_id=False, join_by_session_stamp=False)
    qp = {"sessionStamp": ["st"]}
    assert jk(no_user, user_id="u1", ip="1.1.1.1", query_params=qp) == "s:st"
    assert jk(no_user, user_id="u1") is None
    assert jk(no_stamp, user_id="u1", ip="1.1.1.1") == "u:u1"
    assert jk(no_stamp, ip="1.1.1.1", query_params=qp) is None
    assert jk(none, user_id="u1", ip="1.1.1.1", query_params=qp) is None


def test_user_id_and_stamp_namespaces_never_meet() -> None:
    assert jk(user_id="x") != jk(ip="x")


def test_session_stamp_helper() -> None:
    assert session_stamp({"query_params": {"sessionStamp": ["a"]}, "ip": "i"}) == "a"
    assert session_stamp({"query_params": {"sessionStamp": [""]}, "ip": "i"}) == "i"
    assert session_stamp({"ip": ""}) is None
    assert session_stamp({}) is None


def test_parse_hit_clock_is_running_max() -> None:
    h = parse_hit(raw(base()), SETTINGS, None, clock=T0_US + 5)
    assert (h.t, h.clock) == (T0_US, T0_US + 5)
    h = parse_hit(raw(base()), SETTINGS, None, clock=T0_US - 5)
    assert h.clock == T0_US


def test_parse_hit_returns_reason_string() -> None:
    assert parse_hit(b"[]", SETTINGS, None) == "not_object"


# --- DeadLetter --------------------------------------------------------------------------------

def test_dead_letter_utf8() -> None:
    d = DeadLetter("not_json", "{nicht jsön".encode(), {"file": "f.jsonl", "line": 3})
    assert orjson.loads(d.to_json()) == {"error": "not_json", "raw": "{nicht jsön",
                                         "raw_encoding": "utf-8",
                                         "source": {"file": "f.jsonl", "line": 3}}
    assert list(orjson.loads(d.to_json())) == ["error", "raw", "raw_encoding", "source"]


def test_dead_letter_base64_for_invalid_utf8() -> None:
    data = b"\xff\xfe garbage"
    d = DeadLetter("not_json", data, {"topic": "hits", "partition": 2, "offset": 17})
    out = orjson.loads(d.to_json())
    assert out["raw_encoding"] == "base64"
    assert base64.b64decode(out["raw"]) == data
    assert out["source"] == {"topic": "hits", "partition": 2, "offset": 17}


def test_dead_letter_pickles() -> None:
    import pickle
    d = pickle.loads(pickle.dumps(DeadLetter("too_large", b"x", {"file": "-", "line": 1})))
    assert (d.reason, d.raw, d.source) == ("too_large", b"x", {"file": "-", "line": 1})


def test_engine_dead_letters_with_lines() -> None:
    from protosessions.engine import Engine
    lines = [raw(base()), b"", b"[]", b"{x", raw(base(id="h2", ip=5)), b"\xff"]
    eng = Engine(SETTINGS, future_check=False)
    out = eng.run(lines, "in.jsonl")
    assert len(out) == 1
    assert [(d.reason, d.source) for d in eng.dead_letters] == [
        ("not_object", {"file": "in.jsonl", "line": 3}),
        ("not_json", {"file": "in.jsonl", "line": 4}),
        ("bad_type:ip", {"file": "in.jsonl", "line": 5}),
        ("not_json", {"file": "in.jsonl", "line": 6}),
    ]
