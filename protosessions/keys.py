"""Names of the per-key state, kept from the original Go package.

The Go engine stored proto-sessions in a key-value store under these names.
Here the state lives in Bytewax's per-key snapshots, but the names still
identify the pieces (in logs, metrics and tests) and the bucket arithmetic is
the timing wheel that drives clock closes.
"""

from __future__ import annotations

import re

BUCKETS_PREFIX = "sessions.buckets"
NEXT_BUCKET_KEY = "sessions.buckets.next"
PROTO_SESSION_HITS_PREFIX = "sessions.hits"
COMPACTED_HITS_PREFIX = "sessions.hits.compacted"
SESSION_STAMP_PREFIX = "sessions.stamps"
SESSION_STAMP_BY_CLIENT_ID_PREFIX = "sessions.stamps.by.client.id"
EXPIRATION_PREFIX = "sessions.expiration"

MICROS = 1_000_000
_INTEGER = re.compile(r"-?[0-9]+")


def bucket_number(time: int | float, tick_interval: int | float) -> int:
    """Timing-wheel bucket of a Unix time in seconds.

    `tick_interval` is in seconds; 0 (or less) means one bucket a second.
    """
    tick = tick_interval if tick_interval > 0 else 1
    return int(time // tick)


def bucket_number_us(time_us: int, tick_us: int) -> int:
    """`bucket_number` for times and ticks in integer microseconds (hot path)."""
    return time_us // (tick_us if tick_us > 0 else MICROS)


def buckets_key(n: int) -> str:
    return f"{BUCKETS_PREFIX}.{n}"


def buckets_parse_number(key: str) -> int:
    """The bucket number in a `buckets_key`; ValueError names the bad key."""
    prefix = BUCKETS_PREFIX + "."
    if not key.startswith(prefix):
        raise ValueError(f"not a buckets key (want {prefix}<n>): {key!r}")
    rest = key[len(prefix):]
    if not _INTEGER.fullmatch(rest):
        raise ValueError(f"bucket number is not an integer in {key!r}")
    return int(rest)


def expiration_key(acid: str) -> str:
    return f"{EXPIRATION_PREFIX}.{acid}"


def proto_session_hits_key(acid: str) -> str:
    return f"{PROTO_SESSION_HITS_PREFIX}.{acid}"


def compacted_hits_key(acid: str) -> str:
    return f"{COMPACTED_HITS_PREFIX}.{acid}"


def session_stamp_key(stamp: str) -> str:
    return f"{SESSION_STAMP_PREFIX}.{stamp}"


def session_stamp_by_client_id_key(cid: str) -> str:
    return f"{SESSION_STAMP_BY_CLIENT_ID_PREFIX}.{cid}"
