"""The session record (SPEC "Output: one session")."""

from __future__ import annotations

import hashlib
import re
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


_ACID_VALUE = re.compile(rb'"authoritative_client_id"\s*:\s*(?:"(?:[^"\\]|\\.)*"|null)')


def with_acid(raw: bytes, acid: str, has_field: bool) -> bytes:
    """The raw hit with `authoritative_client_id` set to `acid`, every other
    byte as received: appended, or replaced where the hit has the field. Only
    when the name also occurs nested (so the top-level one is ambiguous) is
    the hit re-serialised."""
    value = orjson.dumps(acid)
    if not has_field:
        return raw.rstrip()[:-1] + b',"authoritative_client_id":' + value + b"}"
    found = _ACID_VALUE.findall(raw)
    if len(found) == 1 and raw.count(b'"authoritative_client_id"') == 1:
        return _ACID_VALUE.sub(lambda _: b'"authoritative_client_id":' + value, raw, count=1)
    obj = orjson.loads(raw)
    obj["authoritative_client_id"] = acid
    return orjson.dumps(obj)


def session_json(ps: ProtoSession, hits: list[StoredHit], reason: str,
                 session_hits: str = "full") -> bytes:
    """Serialise a closed proto-session; `hits` (already carrying the ACID,
    see `with_acid`) in arrival order. `session_hits` (`full`, `ids`, `none`)
    says what the record's `hits` holds. Assembled by joining bytes, so no hit
    is parsed again: the ids are stored beside each hit, the metrics kept
    up to date as hits arrived (`SessionMetrics`)."""
    if len(hits) > 1:
        hits = sorted(hits, key=_first)
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
    if session_hits == "full":  # hits joined in C: cheaper than a Python loop over them
        body = b',"hits":[' + b",".join(raws) + b'],"metrics":'
    elif session_hits == "ids":
        body = b',"hits":' + orjson.dumps(ids) + b',"metrics":'
    else:
        body = b',"metrics":'
    metrics = orjson.dumps(ps.metrics.result(ps.first_t, ps.last_t))
    return b"".join((head[:-1], body, metrics, b"}"))


def _first(h: StoredHit) -> int:
    return h[0]
