"""The session record (SPEC "Output: one session")."""

from __future__ import annotations

import hashlib
import re
from operator import itemgetter
from typing import Sequence

import orjson

from .state import ProtoSession, StoredHit
from .timefmt import format_time_us


def session_id(property_id: str, acid: str, hit_ids: Sequence[str]) -> str:
    """First 32 hex digits of SHA-256 of `orjson.dumps([property_id, ACID,
    hit ids in "hits" order])`: it names the content, so a session written
    again after a resume keeps its id, and JSON quoting keeps any two
    different contents apart (a separator character could occur in an ID)."""
    return hashlib.sha256(orjson.dumps([property_id, acid, hit_ids])).hexdigest()[:32]


_ACID_KEY = b'"authoritative_client_id"'
_ACID_VALUE = re.compile(rb'"authoritative_client_id"\s*:\s*(?:"(?:[^"\\]|\\.)*"|null)')
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{},:]')  # strings and structure; scalars between


def with_acid(raw: bytes, acid: str, has_field: bool) -> bytes:
    """The raw hit with `authoritative_client_id` set to `acid`, every other
    byte as received: appended, or replaced where the hit has the field.
    Only when the key's spelling is plain and unique is a regex enough;
    otherwise (escapes, the name nested or in a string) the top-level
    object is scanned, so however the key is spelled the top-level value
    is replaced and nested objects are never touched (SPEC "hits")."""
    value = orjson.dumps(acid)
    if not has_field:
        return raw.rstrip()[:-1] + b',"authoritative_client_id":' + value + b"}"
    if b"\\" not in raw and raw.count(_ACID_KEY) == 1:
        out, n = _ACID_VALUE.subn(lambda _: _ACID_KEY + b":" + value, raw, count=1)
        if n:
            return out
    pieces, last = [], 0
    for start, end in _top_level_values(raw, "authoritative_client_id"):
        pieces += (raw[last:start], value)
        last = end
    pieces.append(raw[last:])
    return b"".join(pieces)


def _top_level_values(raw: bytes, name: str) -> list[tuple[int, int]]:
    """Byte spans of the values of key `name` in the top-level object of
    valid JSON `raw` (every one, should the key repeat). Iterative, so any
    nesting orjson accepts is fine."""
    spans: list[tuple[int, int]] = []
    depth, expect_key, matched, start = 0, False, False, -1
    for m in _JSON_TOKEN.finditer(raw):
        tok = m.group()
        if tok[0] == 0x22:  # a string: a key when one is expected at the top level
            if depth == 1 and expect_key:
                expect_key = False
                matched = orjson.loads(tok) == name
        elif tok == b":":
            if depth == 1 and matched:
                start, matched = m.end(), False
        elif tok == b"," or tok in b"}]":
            if depth == 1 and start >= 0:
                spans.append((start, m.start()))
                start = -1
            if tok == b",":
                expect_key = depth == 1
            else:
                depth -= 1
        else:  # { or [
            depth += 1
            expect_key = depth == 1
    return spans


def session_json(ps: ProtoSession, hits: list[StoredHit], reason: str,
                 session_hits: str = "full") -> bytes:
    """Serialise a closed proto-session; `hits` (already carrying the ACID,
    see `with_acid`) in arrival order. `session_hits` (`full`, `ids`, `none`)
    says what the record's `hits` holds. Assembled by joining bytes, so no hit
    is parsed again: the ids are stored beside each hit, the metrics kept
    up to date as hits arrived (`SessionMetrics`)."""
    if len(hits) > 1:
        hits = sorted(hits, key=_FIRST)
    _, raws, ids = zip(*hits) if hits else ((), (), ())
    head = orjson.dumps({
        "session_id": session_id(ps.property_id, ps.acid, ids),
        "property_id": ps.property_id,
        "authoritative_client_id": ps.acid,
        "client_ids": sorted(ps.client_ids),
        "user_ids": sorted(ps.user_ids),
        "start": format_time_us(ps.first_t),
        "end": format_time_us(ps.last_t),
        "hit_count": len(hits),
        "close_reason": reason,
    })
    metrics = orjson.dumps(ps.metrics.result(ps.first_t, ps.last_t))
    if session_hits == "full" and raws:
        # One join in C writes the record: the head rides on the first hit and
        # the tail on the last, so the hits' bytes are copied once (each `+`
        # of the whole body would copy all of them again).
        parts = list(raws)
        parts[0] = head[:-1] + b',"hits":[' + parts[0]
        parts[-1] = parts[-1] + b'],"metrics":' + metrics + b"}"
        return b",".join(parts)
    if session_hits == "ids":
        body = b',"hits":' + orjson.dumps(ids) + b',"metrics":'
    elif session_hits == "full":
        body = b',"hits":[],"metrics":'
    else:
        body = b',"metrics":'
    return b"".join((head[:-1], body, metrics, b"}"))


_FIRST = itemgetter(0)  # a stored hit's time; a C-level key, no Python call a hit
