"""Per-shard state: the open proto-sessions and the timing wheel over them.

This is what Bytewax snapshots for a session shard. It holds only open
proto-sessions (a closed one leaves nothing behind) and the wheel holds only
buckets that still name an open proto-session.
"""

from __future__ import annotations

import pickle
from array import array
from functools import lru_cache
from collections import deque
from typing import Iterable, Iterator

import orjson

from .codec import compress_hits, decompress_hits, dictionaries
from .session_metrics import SessionMetrics
from .store import Change, Marker, ShardStore, resume_at
from .wheel import TimingWheel

SessionKey = tuple  # (property_id, acid)
# (t, hit bytes with the ACID set, hit id), in arrival order: the id lets a
# close name the session (and a restore rebuild `ids`) without parsing hits.
StoredHit = tuple

# The loose hits of a proto-session quiet for this long (of the shard's clock)
# are sealed into a compressed block (`ShardState.seal_cold`): an open hit
# costs its compressed bytes, not a tuple of Python objects, once its
# proto-session is quiet. Shorter costs more compressions on a backlog.
SEAL_AFTER_US = 60_000_000
MERGE_FAN = 8

SNAPSHOT_VERSION = 8  # 2: hits carry their ACID; 3-5: compressed parts written once;
# 6: stored hits carry their id, proto-sessions their metrics, no first_id; 7: zstd, not zlib;
# 8: with a store (`protosessions.store`), only the clock and the store's marker


class HitIds:
    """The ids of a proto-session's hits, for SPEC rule 5's duplicate check.

    One buffer of NUL-terminated UTF-8 ids, not a set of strings: a set costs
    about 100 bytes a hit, this the id's length plus one. A few ids are
    searched in the buffer (`\\0id\\0`, a fraction of a microsecond for
    `INDEX_FROM` of them); past it a hash table of their offsets (4 bytes a
    slot, at most two thirds full: 6-12 bytes an id) keeps each check O(1)
    for a session of up to `max_events` hits. An id holding a NUL (JSON
    allows it) goes to a small set."""

    __slots__ = ("buf", "odd", "count", "table")
    INDEX_FROM = 128

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.buf = bytearray(b"\0")
        self.odd: set[str] | None = None
        self.count = 0  # ids in `buf`
        self.table: array | None = None  # offsets into `buf` by hash; 0: empty slot
        for i in ids:
            self.add(i)

    def add(self, hit_id: str) -> None:
        b = hit_id.encode("utf-8", "surrogatepass")
        if b"\0" in b:
            if self.odd is None:
                self.odd = set()
            self.odd.add(hit_id)
            return
        offset = len(self.buf)
        self.buf += b
        self.buf += b"\0"
        self.count += 1
        table = self.table
        if (table is not None and 3 * self.count <= 2 * len(table)
                and (offset < 0x7FFFFFFF or table.typecode == "q")):
            self._file(table, b, offset)
        elif self.count > self.INDEX_FROM:
            self._index()

    def _file(self, table: array, b: bytes, offset: int) -> None:
        mask = len(table) - 1
        i = hash(b) & mask
        while table[i]:
            i = (i + 1) & mask
        table[i] = offset

    def _index(self) -> None:
        size = 256
        while size < 2 * self.count:
            size *= 2
        kind = "i" if len(self.buf) < 0x7FFFFFFF else "q"  # offsets past 2 GiB: 8 bytes
        table = self.table = array(kind, bytes(array(kind).itemsize * size))
        offset = 1
        for b in bytes(self.buf[1:-1]).split(b"\0"):
            self._file(table, b, offset)
            offset += len(b) + 1

    def __contains__(self, hit_id: object) -> bool:
        if not isinstance(hit_id, str):
            return False
        b = hit_id.encode("utf-8", "surrogatepass")
        if b"\0" in b:
            return self.odd is not None and hit_id in self.odd
        table = self.table
        if table is None:
            return self.buf.find(b"\0" + b + b"\0") >= 0
        buf = self.buf
        mask = len(table) - 1
        i = hash(b) & mask
        end = len(b)
        while True:
            offset = table[i]
            if not offset:
                return False
            # startswith first: a shorter id near the end leaves no byte at offset + end
            if buf.startswith(b, offset) and buf[offset + end] == 0:
                return True
            i = (i + 1) & mask

    def __iter__(self) -> Iterator[str]:
        for b in bytes(self.buf[1:-1]).split(b"\0") if len(self.buf) > 1 else ():
            yield b.decode("utf-8", "surrogatepass")
        if self.odd:
            yield from self.odd


class ProtoSession:
    """One open group of hits of a `(property_id, ACID)`.

    Hits are kept as `StoredHit`s in arrival order; once their bytes pass the
    compaction threshold, or once they are `SEAL_AFTER_US` old, they move,
    compressed, into `compacted` (`seal`), a few blocks of growing size.
    Past the shard's memory budget the blocks of the coldest ones leave RAM:
    their first `on_disk` hits are then only in the state store
    (`ShardState.spill`).
    """

    __slots__ = ("property_id", "acid", "key", "first_t", "last_t", "count", "metrics",
                 "size", "hits", "compacted", "ids", "client_ids", "user_ids", "bucket", "seen_clock", "sid", "saved_count", "sealed_upto", "unsaved", "seals", "on_disk",
                 "filed")

    def __init__(self, property_id: str, acid: str) -> None:
        self.property_id = property_id
        self.acid = acid
        # one key object for every wheel entry and queue of this proto-session
        # (a hit's own key tuple would stay alive as long as its stale entry)
        self.key: SessionKey = (property_id, acid)
        self.first_t = 0
        self.metrics = SessionMetrics()
        self.last_t = 0
        self.count = 0
        self.size = 0
        self.hits: list[StoredHit] = []
        self.compacted: list[bytes] = []
        self.seals = 0  # blocks `seal` added since this object was made
        self.ids = HitIds()
        self.client_ids: set[str] = set()
        self.user_ids: set[str] = set()
        self.bucket = -1  # the wheel bucket it expires in (only grows)
        self.filed = -1  # the bucket of its one wheel entry (at most `bucket`)
        self.seen_clock = 0
        # With a store: its id there (0: never written), how many of its hits
        # the store holds, how many of `hits` are among them, and chunks of
        # hits compaction took out of `hits` before the store had them.
        self.sid = 0
        self.saved_count = 0
        self.sealed_upto = 0
        self.unsaved: list[bytes] | None = None
        self.on_disk = 0  # the oldest hits, held only by the store

    def acid_suffix(self) -> bytes:
        """`,"authoritative_client_id":<ACID>}`: closes a hit with its ACID set."""
        return _suffix(self.acid)

    def seal(self) -> None:
        """Move the loose hits into a compressed block (with the stream's
        dictionary once there is one, `protosessions.codec`); with a store,
        the hits it does not hold yet stay queued for it (`unsaved`)."""
        hits = self.hits
        if not hits:
            return
        dict_id = dictionaries.current
        if not dict_id:
            dictionaries.offer(hits)
            dict_id = dictionaries.current
        block = compress_hits(hits, dict_id)
        if self.sid and len(hits) > self.sealed_upto:
            if self.unsaved is None:
                self.unsaved = []
            self.unsaved.append(block if not self.sealed_upto
                                else compress_hits(hits[self.sealed_upto:], dict_id))
        # Every MERGE_FAN blocks of a size become one (a counter in base
        # MERGE_FAN): a block of one or two hits would cost more than its
        # hits, and merging this way recompresses a hit log_FAN(n) times.
        blocks = self.compacted
        blocks.append(block)
        self.seals = n = self.seals + 1
        while n % MERGE_FAN == 0:
            n //= MERGE_FAN
            merged: list[StoredHit] = []
            for b in blocks[-MERGE_FAN:]:
                merged.extend(decompress_hits(b))
            del blocks[-MERGE_FAN:]
            blocks.append(compress_hits(merged, dict_id))
        self.hits = []
        self.sealed_upto = 0  # those hits are in the block now

    def all_hits(self, store: "ShardStore | None" = None) -> list[StoredHit]:
        """Every hit, oldest arrival first (those only on disk, read back from
        `store`, then the blocks, then the loose ones)."""
        hits: list[StoredHit] = []
        if self.on_disk:
            if store is None:
                raise ValueError(f"proto-session {self.sid} has hits in a state store, and none was given")
            for chunk in store.read(self.sid):
                hits.extend(decompress_hits(chunk))
                if len(hits) >= self.on_disk:
                    break
            if len(hits) < self.on_disk:
                raise ValueError(f"stored proto-session {self.sid} has {len(hits)} hits in its store, "
                                 f"its metadata says {self.on_disk}")
            del hits[self.on_disk:]
        for blob in self.compacted:
            hits.extend(decompress_hits(blob))
        hits.extend(self.hits)
        return hits

    def small(self) -> tuple:
        """The fields besides the hits (sets as sorted tuples)."""
        return (self.property_id, self.acid, self.first_t, self.last_t,
                self.count, self.size, tuple(sorted(self.client_ids)),
                tuple(sorted(self.user_ids)), self.bucket, self.seen_clock,
                self.metrics.to_state())

    def to_snapshot(self) -> tuple:
        """A self-contained snapshot (no store): `(small fields, loose hits
        compressed, compacted blocks)`. The ids are not stored: they are in
        the hits."""
        loose = (compress_hits(self.hits),) if self.hits else ()
        return (self.small(), loose, tuple(self.compacted))

    def new_chunks(self, dict_id: int = 0) -> list[bytes]:
        """The hits the store does not hold yet, compressed (each hit once,
        with dictionary `dict_id`): all of them if it holds none of them."""
        if not self.sid:
            return list(self.compacted) + ([compress_hits(self.hits, dict_id)] if self.hits else [])
        chunks = self.unsaved or []
        if len(self.hits) > self.sealed_upto:
            chunks.append(compress_hits(self.hits[self.sealed_upto:], dict_id))
        return chunks

    def saved(self) -> None:
        """The store now holds every hit."""
        self.unsaved = None
        self.sealed_upto = len(self.hits)
        self.saved_count = self.count

    def to_stored(self) -> bytes:
        """The metadata row of the store: small fields and how many of the
        latest hits are loose (not compacted)."""
        return pickle.dumps((self.small(), len(self.hits)), protocol=5)

    @classmethod
    def from_stored(cls, sid: int, blob: bytes, chunks: list[bytes],
                    lazy: bool = False) -> "ProtoSession":
        """`lazy`: the hits before the loose ones stay only in the store
        (`on_disk`), as with a memory budget."""
        small, loose = pickle.loads(blob)
        hits: list[StoredHit] = []
        for chunk in chunks:
            hits.extend(decompress_hits(chunk))
        if len(hits) != small[4]:
            raise ValueError(f"stored proto-session {sid} has {len(hits)} hits, "
                             f"its metadata says {small[4]}")
        cut = len(hits) - loose
        compacted = (compress_hits(hits[:cut]),) if cut and not lazy else ()
        ps = cls._from_small(small, hits[cut:], compacted, hits[:cut])
        ps.sid = sid
        if lazy:
            ps.on_disk = cut
        ps.saved()
        return ps

    @classmethod
    def _from_small(cls, s: tuple, hits: list[StoredHit], compacted: tuple,
                    compacted_hits: list[StoredHit]) -> "ProtoSession":
        ps = cls(s[0], s[1])
        (ps.first_t, ps.last_t, ps.count, ps.size) = s[2:6]
        ps.client_ids = set(s[6])
        ps.user_ids = set(s[7])
        ps.bucket = s[8]
        ps.seen_clock = s[9]
        ps.metrics = SessionMetrics.from_state(s[10])
        ps.hits = hits
        ps.compacted = list(compacted)
        ps.ids = HitIds(h[2] for h in compacted_hits)
        for h in hits:
            ps.ids.add(h[2])
        return ps

    @classmethod
    def from_snapshot(cls, snap: tuple) -> "ProtoSession":
        s, loose, compacted = snap
        hits: list[StoredHit] = []
        for chunk in loose:
            hits.extend(decompress_hits(chunk))
        in_blocks: list[StoredHit] = []
        for block in compacted:
            in_blocks.extend(decompress_hits(block))
        return cls._from_small(s, hits, compacted, in_blocks)


@lru_cache(maxsize=65536)
def _suffix(acid: str) -> bytes:
    return b',"authoritative_client_id":' + orjson.dumps(acid) + b"}"


class ShardState:
    """Open proto-sessions of one shard plus the timing wheel that expires them.

    The wheel is lazy: a proto-session is filed once, under the bucket of
    its first expiry; a hit that moves the expiry later only changes
    `ps.bucket`, and when the filed bucket comes due the proto-session is
    either due or filed again under its current bucket (an expiry never moves
    earlier). So it costs one wheel entry, not one a hit; entries of closed
    proto-sessions are skipped.
    """

    __slots__ = ("sessions", "wheel", "clock", "store", "gone", "next_sid", "kept_dict",
                 "fresh", "budget", "sealed_bytes", "cold")

    def __init__(self, store: "ShardStore | None" = None, budget: int = 0) -> None:
        self.sessions: dict[SessionKey, ProtoSession] = {}
        self.wheel = TimingWheel()
        self.clock = 0
        self.store = store  # None: snapshots carry the whole open state
        self.gone: list[int] = []  # store ids of proto-sessions closed since the last write
        self.next_sid = 1
        self.kept_dict = 0  # the dictionary the store was last given
        # (clock, key) when a proto-session's loose hits went from none to
        # some, oldest first: what `seal_cold` looks at
        self.fresh: deque[tuple[int, SessionKey]] = deque()
        # The memory budget (0: none): bytes of sealed blocks the shard keeps
        # in RAM (`sealed_bytes`); past it `spill` moves the blocks of the
        # proto-sessions sealed longest ago (`cold`, in seal order) to the store.
        self.budget = budget
        self.sealed_bytes = 0
        self.cold: deque[SessionKey] = deque()

    def schedule(self, key: SessionKey, ps: ProtoSession, bucket: int) -> None:
        ps.bucket = bucket
        if ps.filed < 0:
            ps.filed = bucket
            self.wheel.schedule(ps.key, bucket)

    def due(self, current_bucket: int) -> Iterator[SessionKey]:
        """Keys of open proto-sessions whose expiry bucket is before
        `current_bucket` (those filed earlier that expire later are filed again)."""
        sessions, wheel = self.sessions, self.wheel
        for b, key in wheel.due(current_bucket):
            ps = sessions.get(key)
            if ps is None or ps.filed != b:
                continue  # closed, or an entry of a closed one of the same key
            if ps.bucket == b:
                yield key
            else:  # later: due, if at all, in this same pass when its bucket comes
                ps.filed = ps.bucket
                wheel.schedule(ps.key, ps.bucket)

    def seal_cold(self, now: int) -> None:
        """Seal the loose hits of proto-sessions that got no hit for
        `SEAL_AFTER_US` before `now` (one queue entry a quiet spell, not a
        hit); it never changes the output (blocks are read back in order)."""
        fresh = self.fresh
        limit = now - SEAL_AFTER_US
        sessions = self.sessions
        while fresh and fresh[0][0] <= limit:
            key = fresh.popleft()[1]
            ps = sessions.get(key)
            if ps is None or not ps.hits:
                continue
            if ps.seen_clock > limit:  # not quiet yet: look again later
                fresh.append((ps.seen_clock, key))
            else:
                self.seal(ps)

    def seal(self, ps: ProtoSession) -> None:
        """`ps.seal()`, counted against the memory budget; `cold` gets one
        entry each time a proto-session's blocks go from none to some."""
        before = _block_bytes(ps)
        ps.seal()
        self.sealed_bytes += _block_bytes(ps) - before
        if self.budget:
            if not before and ps.compacted:
                self.cold.append(ps.key)
                if len(self.cold) > 2 * len(self.sessions) + 64:  # entries of closed ones
                    self._prune_cold()
            if self.sealed_bytes > self.budget:
                self.spill()

    def _prune_cold(self) -> None:
        """Drop the entries of proto-sessions that closed or left RAM, so that
        a budget never reached does not keep one entry per session ever sealed."""
        sessions = self.sessions
        self.cold = deque(k for k in self.cold
                          if (ps := sessions.get(k)) is not None and ps.compacted)

    def spill(self) -> None:
        """Over the budget: write the coldest proto-sessions' hits to the store
        (one position, as a snapshot writes: resumable only once a snapshot
        names a later one) and drop their blocks from RAM; `all_hits` reads
        them back. Without a store yet (a fresh shard before its first
        snapshot) nothing can leave."""
        if self.store is None:
            return
        victims: dict[SessionKey, ProtoSession] = {}
        left = self.sealed_bytes
        while left > self.budget // 2 and self.cold:  # down to half: a write per spill, not per seal
            key = self.cold.popleft()
            ps = self.sessions.get(key)
            if ps is not None and ps.compacted and key not in victims:
                victims[key] = ps
                left -= _block_bytes(ps)
        if not victims:
            return
        self.write(victims.values())
        for ps in victims.values():
            self.sealed_bytes -= _block_bytes(ps)
            ps.on_disk = ps.count - len(ps.hits)
            ps.compacted = []
            ps.seals = 0

    def forget(self, ps: ProtoSession) -> None:
        """`ps` closed or left the shard: the store's next position says so."""
        self.sealed_bytes -= _block_bytes(ps)
        if ps.sid:
            self.gone.append(ps.sid)

    def all_hits(self, ps: ProtoSession) -> list[StoredHit]:
        """Every hit of `ps`, those only in the store too."""
        return ps.all_hits(self.store)

    def snapshot(self) -> tuple:
        """`(version, clock, "full", proto-sessions)` without a store; with
        one, the changes go to the store and the snapshot is `(version,
        clock, "store", marker, next store id)`: its size and cost follow
        what changed, not what is open."""
        if self.store is None:  # with the dictionaries its compacted blocks may use
            return (SNAPSHOT_VERSION, self.clock, "full",
                    tuple(ps.to_snapshot() for ps in self.sessions.values()),
                    tuple(dictionaries.known.items()))
        marker = self.write(self.sessions.values())
        return (SNAPSHOT_VERSION, self.clock, "store", tuple(marker), self.next_sid)

    def write(self, candidates: Iterable[ProtoSession]) -> Marker:
        """One position of the store: the changes of `candidates` since they
        were last written, and the proto-sessions closed since the last one."""
        assert self.store is not None
        changes: list[Change] = []
        changed: list[ProtoSession] = []
        candidates = list(candidates)
        dict_id = dictionaries.current
        if not dict_id:
            for ps in candidates:
                dictionaries.offer(ps.hits[ps.sealed_upto:])
            dict_id = dictionaries.current
        if dict_id != self.kept_dict:  # before any chunk that needs it
            self.store.keep_dictionary(dict_id, dictionaries.known[dict_id])
            self.kept_dict = dict_id
        for ps in candidates:
            if ps.count == ps.saved_count and ps.sid:
                continue  # no hit since the last write: nothing of it changed
            chunks = ps.new_chunks(dict_id)
            if not ps.sid:
                ps.sid = self.next_sid
                self.next_sid += 1
            changes.append((ps.sid, ps.to_stored(), chunks))
            changed.append(ps)
        marker = self.store.write(changes, self.gone)
        self.gone = []
        for ps in changed:
            ps.saved()
        return marker

    @classmethod
    def restore(cls, snap: tuple, store: "ShardStore | None" = None,
                budget: int = 0) -> "ShardState":
        """The state a snapshot names; a store snapshot needs its `store`,
        which is rolled back to exactly the snapshot's position. With a
        `budget` the restored blocks stay in the store (`on_disk`)."""
        check_version(snap)
        state = cls(store, budget)
        state.clock = snap[1]
        if snap[2] == "full":
            for dict_id, data in snap[4]:
                dictionaries.register(dict_id, data)
            items = (ProtoSession.from_snapshot(item) for item in snap[3])
        elif snap[2] == "store":
            store = resume_at(store, snap[3], "session snapshot's proto-sessions")
            state.next_sid = snap[4]
            items = (ProtoSession.from_stored(*row, lazy=bool(budget))
                     for row in store.load(by_session=bool(budget)))
        else:
            raise ValueError(f"session snapshot of unknown kind {snap[2]!r}")
        for ps in items:
            key = (ps.property_id, ps.acid)
            state.sessions[key] = ps
            state.schedule(key, ps, ps.bucket)
            if ps.hits:
                state.fresh.append((state.clock, key))
            if ps.compacted:
                state.sealed_bytes += _block_bytes(ps)
                if budget:
                    state.cold.append(key)
        return state


def _block_bytes(ps: ProtoSession) -> int:
    return sum(map(len, ps.compacted)) if ps.compacted else 0


def check_version(snap: object) -> None:
    """`ValueError` unless `snap` is a session snapshot of this build's format."""
    if not isinstance(snap, tuple) or len(snap) < 3 or snap[0] != SNAPSHOT_VERSION:
        version = snap[0] if isinstance(snap, tuple) and snap else snap
        raise ValueError(f"session snapshot format {version!r} is not {SNAPSHOT_VERSION}: "
                         "this build cannot resume it")
