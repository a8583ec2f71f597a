"""Issue 10, "Input that takes the job down": hits that crashed the run must end
as a session hit or a dead letter (SPEC "Input: one hit", "Rejection", "hits")."""

from __future__ import annotations

import orjson
import pytest

from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.hit import check
from protosessions.session import with_acid

SETTINGS = Settings()
HEAD = (b'{"id":"h1","client_id":"c1","property_id":"G-1",'
        b'"server_received_time":"2025-01-01T12:00:00Z"')


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def reason(raw: bytes) -> str | None:
    res = check(raw, SETTINGS, None)
    return res if isinstance(res, str) else None


@pytest.mark.parametrize("leaf", [b"1", b"1.5", b"18446744073709551615", b'"x"', b"{}"])
@pytest.mark.parametrize("depth", [400, 1000, 1022])
def test_a_deeply_nested_extra_field_is_valid(depth: int, leaf: bytes) -> None:
    """orjson reads it (depth of the hit object included), so it is a hit."""
    raw = HEAD + b',"deep":' + nested(depth, leaf) + b"}"
    assert reason(raw) is None


@pytest.mark.parametrize("leaf", [b"1.5", b"1"])
def test_a_deeply_nested_huge_integer_is_not_json(leaf: bytes) -> None:
    """The huge-integer scan must not recurse either (it used `json.loads`)."""
    raw = HEAD + b',"deep":' + nested(1000, b"18446744073709551616") + b',"f":' + leaf + b"}"
    assert reason(raw) == "not_json"
    top = nested(1000, b"18446744073709551616")  # not an object, but first: not JSON
    assert reason(top) == "not_json"


def test_nesting_past_orjson_limit_is_not_json() -> None:
    assert reason(HEAD + b',"deep":' + nested(1030) + b"}") == "not_json"


def test_huge_integer_scan_ignores_digits_inside_strings() -> None:
    raw = HEAD + b',"s":"18446744073709551616","e":"\\"18446744073709551616","f":1.0}'
    assert reason(raw) is None
    raw = HEAD + b',"n":-9223372036854775809,"f":1.0}'
    assert reason(raw) == "not_json"
    raw = HEAD + b',"n":-9223372036854775808,"m":18446744073709551615,"f":1.0}'
    assert reason(raw) is None


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00Z",
                                "1969-12-31T23:59:59.999999Z", "1970-01-01T00:59:59+01:00"])
def test_instants_before_1970_are_bad_timestamp(ts: str) -> None:
    raw = orjson.dumps({"id": "h", "client_id": "c", "property_id": "G",
                        "server_received_time": ts})
    assert reason(raw) == "bad_timestamp"


@pytest.mark.parametrize("ts", ["1970-01-01T00:00:00Z", "1970-01-01T01:00:00+01:00"])
def test_the_epoch_itself_is_a_valid_time(ts: str) -> None:
    raw = orjson.dumps({"id": "h", "client_id": "c", "property_id": "G",
                        "server_received_time": ts})
    assert reason(raw) is None


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999Z"])
def test_extreme_instants_never_crash_the_run(ts: str) -> None:
    """An instant at the far end either is rejected or closes as a session
    whose times are written; nothing raises on the way (OverflowError)."""
    raw = orjson.dumps({"id": "h", "client_id": "c", "property_id": "G",
                        "server_received_time": ts})
    engine = Engine(SETTINGS, future_check=False)
    out = engine.run([raw])
    assert len(out) + len(engine.dead_letters) == 1
    for _, session in out:
        assert orjson.loads(session)["start"].startswith("9999-12-31T")


def test_escaped_top_level_acid_key_is_set_and_nested_one_untouched() -> None:
    raw = (b'{"id":"h9","client_id":"x","property_id":"G","server_received_time":'
           b'"2025-01-01T12:00:09Z","authoritative\\u005fclient_id":null,'
           b'"x":{"authoritative_client_id":"user-data"}}')
    out = orjson.loads(with_acid(raw, "x", True))
    assert out["authoritative_client_id"] == "x"
    assert out["x"] == {"authoritative_client_id": "user-data"}


@pytest.mark.parametrize("raw", [
    # the key's text inside a string value, before the real key
    b'{"a":"\\"authoritative_client_id","authoritative_client_id":"old","id":"h"}',
    # a duplicate key: every JSON reader must see the new value
    b'{"authoritative_client_id":"a","n":[1,{"authoritative_client_id":"n"}],'
    b'"authoritative_client_id":"b"}',
    # escaped in another way, and spaces around the colon
    b'{"authoritative_client_i\\u0064" : "old" , "s":"\\u00e9"}',
    # deep enough that re-serialising would fail
    b'{"authoritative_client_id":"old","d":' + nested(600) + b',"k":"\\/"}',
])
def test_with_acid_sets_the_top_level_key_only(raw: bytes) -> None:
    before = orjson.loads(raw)
    out = with_acid(raw, "new", True)
    after = orjson.loads(out)
    assert after["authoritative_client_id"] == "new"
    before["authoritative_client_id"] = "new"
    assert after == before


def test_the_whole_run_survives_a_deep_hit_with_an_escaped_acid() -> None:
    raw = (HEAD + b',"authoritative\\u005fclient_id":"a1","deep":' + nested(1000)
           + b',"x":{"authoritative_client_id":"keep"}}')
    engine = Engine(SETTINGS, future_check=False)
    out = engine.run([raw])
    assert engine.dead_letters == []
    (acid, session), = out
    assert acid == "a1"
    hit, = orjson.loads(session)["hits"]
    assert hit["authoritative_client_id"] == "a1" and hit["x"] == {"authoritative_client_id": "keep"}
