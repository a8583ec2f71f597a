"""The session record (SPEC "Output: one session")."""

from __future__ import annotations

import hashlib

import orjson

from .state import ProtoSession, StoredHit
from .timefmt import format_time_us

_ACID_FIELD = b'"authoritative_client_id"'


def session_id(property_id: str, acid: str, first_hit_id: str) -> str:
    """First 32 hex digits of SHA-256 of `property_id\\nACID\\nfirst hit id`."""
    text = f"{property_id}\n{acid}\n{first_hit_id}".encode()
    return hashlib.sha256(text).hexdigest()[:32]


def with_acid(raw: bytes, acid_json: bytes) -> bytes:
    """The raw hit with `authoritative_client_id` set, spliced in without
    re-serialising the rest of the hit."""
    if _ACID_FIELD in raw:
        obj = orjson.loads(raw)
        if "authoritative_client_id" in obj:
            obj["authoritative_client_id"] = orjson.loads(acid_json)
            return orjson.dumps(obj)
    body = raw.rstrip()
    return body[:-1] + b',"authoritative_client_id":' + acid_json + b"}"


def session_json(ps: ProtoSession, hits: list[StoredHit], reason: str) -> bytes:
    """Serialise a closed proto-session; `hits` in arrival order."""
    hits = sorted(hits, key=_first)
    acid_json = orjson.dumps(ps.acid)
    frag = orjson.Fragment
    return orjson.dumps({
        "session_id": session_id(ps.property_id, ps.acid, ps.first_id),
        "property_id": ps.property_id,
        "authoritative_client_id": ps.acid,
        "client_ids": sorted(ps.client_ids),
        "user_ids": sorted(ps.user_ids),
        "start": format_time_us(ps.first_t),
        "end": format_time_us(ps.last_t),
        "hit_count": len(hits),
        "close_reason": reason,
        "hits": [frag(with_acid(raw, acid_json)) for _, raw in hits],
    })


def _first(h: StoredHit) -> int:
    return h[0]
