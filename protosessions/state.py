"""Per-shard state: the open proto-sessions and the timing wheel over them.

This is what Bytewax snapshots for a session shard. It holds only open
proto-sessions (a closed one leaves nothing behind) and the wheel holds only
buckets that still name an open proto-session.
"""

from __future__ import annotations

import pickle
import threading
from functools import lru_cache
from typing import Iterator

import orjson
import zstandard

from .session_metrics import SessionMetrics
from .wheel import TimingWheel

SessionKey = tuple  # (property_id, acid)
# (t, hit bytes with the ACID set, hit id), in arrival order: the id lets a
# close name the session (and a restore rebuild `ids`) without parsing hits.
StoredHit = tuple

SNAPSHOT_VERSION = 7  # 2: hits carry their ACID; 3-5: compressed parts written once;
# 6: stored hits carry their id, proto-sessions their metrics, no first_id; 7: zstd, not zlib


class ProtoSession:
    """One open group of hits of a `(property_id, ACID)`.

    Hits are kept as `StoredHit`s in arrival order; once their bytes pass the
    compaction threshold they move, compressed, into `compacted`.
    """

    __slots__ = ("property_id", "acid", "first_t", "last_t", "count", "metrics",
                 "size", "hits", "compacted", "ids", "client_ids", "user_ids", "bucket", "seen_clock", "sealed", "sealed_upto")

    def __init__(self, property_id: str, acid: str) -> None:
        self.property_id = property_id
        self.acid = acid
        self.first_t = 0
        self.metrics = SessionMetrics()
        self.last_t = 0
        self.count = 0
        self.size = 0
        self.hits: list[StoredHit] = []
        self.compacted: list[bytes] = []
        self.ids: set[str] = set()
        self.client_ids: set[str] = set()
        self.user_ids: set[str] = set()
        self.bucket = -1
        self.seen_clock = 0
        self.sealed: list[bytes] = []  # `hits[:sealed_upto]`, compressed, for snapshots
        self.sealed_upto = 0

    def acid_suffix(self) -> bytes:
        """`,"authoritative_client_id":<ACID>}`: closes a hit with its ACID set."""
        return _suffix(self.acid)

    def to_state(self) -> tuple:
        """Plain, immutable form for snapshots (sets become sorted tuples)."""
        return (self.property_id, self.acid, self.first_t, self.last_t,
                self.count, self.size, tuple(self.hits), tuple(self.compacted),
                tuple(self.ids), tuple(sorted(self.client_ids)),
                tuple(sorted(self.user_ids)), self.bucket, self.seen_clock,
                self.metrics.to_state())

    def to_snapshot(self) -> tuple:
        """What a snapshot stores: `(small fields, hit chunks, compacted blocks)`.

        Each hit is compressed into a snapshot chunk once, by the first
        snapshot after it arrived; later snapshots reuse the chunk. Compacted
        blocks are already compressed and go in as they are. The ids are not
        stored: they are in the hits. So a snapshot costs what arrived since
        the last one, not the whole open state.
        """
        if len(self.hits) > self.sealed_upto:
            self.sealed.append(compress_hits(self.hits[self.sealed_upto:]))
            self.sealed_upto = len(self.hits)
        small = (self.property_id, self.acid, self.first_t, self.last_t,
                 self.count, self.size, tuple(sorted(self.client_ids)),
                 tuple(sorted(self.user_ids)), self.bucket, self.seen_clock,
                 self.metrics.to_state())
        return (small, tuple(self.sealed), tuple(self.compacted))

    @classmethod
    def from_snapshot(cls, snap: tuple) -> "ProtoSession":
        s, chunks, compacted = snap
        ps = cls(s[0], s[1])
        (ps.first_t, ps.last_t, ps.count, ps.size) = s[2:6]
        ps.client_ids = set(s[6])
        ps.user_ids = set(s[7])
        ps.bucket = s[8]
        ps.seen_clock = s[9]
        ps.metrics = SessionMetrics.from_state(s[10])
        for chunk in chunks:
            ps.hits.extend(decompress_hits(chunk))
        ps.sealed = list(chunks)
        ps.sealed_upto = len(ps.hits)
        ps.compacted = list(compacted)
        ps.ids = {h[2] for h in ps.hits}
        for block in ps.compacted:
            ps.ids.update(h[2] for h in decompress_hits(block))
        return ps

    @classmethod
    def from_state(cls, s: tuple) -> "ProtoSession":
        ps = cls(s[0], s[1])
        (ps.first_t, ps.last_t, ps.count, ps.size) = s[2:6]
        ps.hits = list(s[6])
        ps.compacted = list(s[7])
        ps.ids = set(s[8])
        ps.client_ids = set(s[9])
        ps.user_ids = set(s[10])
        ps.bucket = s[11]
        ps.seen_clock = s[12]
        ps.metrics = SessionMetrics.from_state(s[13])
        return ps


@lru_cache(maxsize=65536)
def _suffix(acid: str) -> bytes:
    return b',"authoritative_client_id":' + orjson.dumps(acid) + b"}"


class _Codec(threading.local):
    """Zstandard level 1, one (de)compressor per thread (Bytewax runs a
    process's workers as threads, and a zstd context is not thread-safe).
    Against zlib level 1 on 64 KiB of hits: about 5x faster to compress, 4x
    to decompress, and smaller (bench: `python bench/compaction.py`)."""

    def __init__(self) -> None:
        self.compress = zstandard.ZstdCompressor(level=1).compress
        self.decompress = zstandard.ZstdDecompressor().decompress


_codec = _Codec()


def compress_hits(hits: list[StoredHit]) -> bytes:
    # Copied out: zstandard's result keeps the allocation of the worst-case
    # size (4-7x the compressed bytes here), which a kept block would pin.
    return bytes(memoryview(_codec.compress(pickle.dumps(hits, protocol=5))))


def decompress_hits(blob: bytes) -> list[StoredHit]:
    return pickle.loads(_codec.decompress(blob))


class ShardState:
    """Open proto-sessions of one shard plus the timing wheel that expires them.

    The wheel is lazy: a proto-session is filed under a bucket each time its
    expiry moves to a later bucket; entries whose proto-session moved on or
    closed are skipped when their bucket comes due.
    """

    __slots__ = ("sessions", "wheel", "clock")

    def __init__(self) -> None:
        self.sessions: dict[SessionKey, ProtoSession] = {}
        self.wheel = TimingWheel()
        self.clock = 0

    def schedule(self, key: SessionKey, ps: ProtoSession, bucket: int) -> None:
        ps.bucket = bucket
        self.wheel.schedule(key, bucket)

    def due(self, current_bucket: int) -> Iterator[SessionKey]:
        """Keys of open proto-sessions filed under buckets before `current_bucket`."""
        sessions = self.sessions
        for b, key in self.wheel.due(current_bucket):
            ps = sessions.get(key)
            if ps is not None and ps.bucket == b:
                yield key

    def snapshot(self) -> tuple:
        return (SNAPSHOT_VERSION, self.clock,
                tuple(ps.to_snapshot() for ps in self.sessions.values()))

    @classmethod
    def restore(cls, snap: tuple) -> "ShardState":
        if not isinstance(snap, tuple) or not snap or snap[0] != SNAPSHOT_VERSION:
            version = snap[0] if isinstance(snap, tuple) and snap else snap
            raise ValueError(f"session snapshot format {version!r} is not {SNAPSHOT_VERSION}: "
                             "this build cannot resume it")
        state = cls()
        state.clock = snap[1]
        for item in snap[2]:
            ps = ProtoSession.from_snapshot(item)
            key = (ps.property_id, ps.acid)
            state.sessions[key] = ps
            state.schedule(key, ps, ps.bucket)
        return state
