"""The typed fast path of `parse_hit` (msgspec, issue 13) against the path
through `check` (orjson and the ordered SPEC checks): the same hit, or the
same reason, for every input."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protosessions.config import Settings
from protosessions.hit import Hit, _parse_checked, parse_hit
from test_fuzz import FIELDS, GOLDEN_HOSTILE, _hit, _key, _line, _string, _time

MANY = settings(derandomize=True, database=None, deadline=None, max_examples=400,
                suppress_health_check=list(HealthCheck))
SETTINGS = [Settings(), Settings(join_by_user_id=False), Settings(join_by_session_stamp=False),
            Settings(max_hit_bytes=300)]
WALL = 1735732800_000000  # 2025-01-01T12:00:00Z


def _same(raw: bytes) -> None:
    for s in SETTINGS:
        for wall in (None, WALL):
            for clock in (0, WALL + 1):
                fast = parse_hit(raw, s, wall, clock)
                slow = _parse_checked(raw, s, wall, clock)
                if isinstance(slow, Hit):
                    assert isinstance(fast, Hit), (raw, fast)
                    assert fast.__reduce__() == slow.__reduce__(), raw
                    assert fast.key == slow.key and fast.raw is raw
                else:
                    assert fast == slow, raw


def _text() -> st.SearchStrategy[bytes]:
    """JSON strings as a tracker or an attacker might write them."""
    return st.one_of(_string(), st.text(max_size=8).map(orjson.dumps),
                     st.sampled_from([b'"x\\u00e9"', b'"\\ud83d\\ude00"', b'"\\udc00"', b'"\xed\xa0\x80"',
                                      b'"\xc3\xa9"', b'"\xc3"', b'"a\x7f"', b'"a\x1f"', b"null", b'""']))


def _valued(name: str) -> st.SearchStrategy[bytes]:
    if name == "server_received_time":
        return st.one_of(_time(), _text())
    if name in ("query_params", "headers"):
        lists = st.lists(_text(), max_size=3).map(lambda xs: b"[" + b",".join(xs) + b"]")
        return st.lists(st.tuples(_text(), lists), max_size=3).map(
            lambda kv: b"{" + b",".join(k + b":" + v for k, v in kv) + b"}") | st.just(b"null")
    if name == "metadata":
        return st.lists(st.tuples(_text(), _text()), max_size=3).map(
            lambda kv: b"{" + b",".join(k + b":" + v for k, v in kv) + b"}")
    return st.one_of(st.sampled_from([b'"a"', b'"b"', b'"G-1"', b'"192.0.2.1"']), _text())


@st.composite
def _known_only(draw: st.DrawFn) -> bytes:
    """Only the SPEC table's fields, mostly of their types: the fast path's inputs."""
    pairs = [draw(_key(name)) + draw(st.sampled_from([b":", b" : "])) + draw(_valued(name))
             for name in FIELDS if draw(st.integers(0, 9)) < (9 if name in FIELDS[:4] else 4)]
    if pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))
    pairs = draw(st.permutations(pairs))
    return draw(st.sampled_from([b"", b" "])) + b"{" + b",".join(pairs) + b"}" \
        + draw(st.sampled_from([b"", b" ", b"\t", b"x", b","]))


@MANY
@given(_known_only())
def test_known_fields_fast_path_matches_check(raw: bytes) -> None:
    _same(raw)


@MANY
@given(st.one_of(_hit(), _line()))
def test_any_line_fast_path_matches_check(raw: bytes) -> None:
    _same(raw)


def test_hostile_golden_fast_path_matches_check() -> None:
    for raw in GOLDEN_HOSTILE.read_bytes().splitlines():
        _same(raw)


def test_generated_hits_take_the_fast_path(monkeypatch) -> None:
    """The benchmark's hits never need `check` (else the fast path buys nothing)."""
    from protosessions import hit as hit_module
    from protosessions.generate import generate_hits

    def refuse(*args):
        raise AssertionError("took the slow path")
    lines = list(generate_hits(2000, 200, 7))
    want = [_parse_checked(raw, Settings(), None).__reduce__() for raw in lines]
    monkeypatch.setattr(hit_module, "_parse_checked", refuse)
    assert [parse_hit(raw, Settings(), None).__reduce__() for raw in lines] == want
